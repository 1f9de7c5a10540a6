"""The current price of every model in the catalog."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AuthedKey, Pool
from processors.catalog import list_current_prices
from processors.pricing import plain
from schemas.api_credits import ModelPriceOut, ModelPricesOut

router = APIRouter(prefix="/api/v1/pricing", tags=["pricing"])


@router.get("/models", summary="The current price of every model")
async def list_models(_: AuthedKey, pool: Pool) -> ModelPricesOut:
    """The version in force now for each model: credits per million tokens (input, cached
    input, cache write, output), per request and per unit, as decimal strings. A null cached
    or cache-write price means the input price applies.
    """
    versions = await list_current_prices(pool)
    return ModelPricesOut(
        models=[
            ModelPriceOut(
                model=v.model,
                provider=v.provider,
                price_version_id=v.id,
                effective_from=v.effective_from,
                input_per_mtok=plain(v.input_per_mtok),
                cached_input_per_mtok=(
                    None if v.cached_input_per_mtok is None else plain(v.cached_input_per_mtok)
                ),
                cache_write_per_mtok=(
                    None if v.cache_write_per_mtok is None else plain(v.cache_write_per_mtok)
                ),
                output_per_mtok=plain(v.output_per_mtok),
                per_request=plain(v.per_request),
                units={name: plain(price) for name, price in sorted(v.units.items())},
            )
            for v in versions
        ]
    )
