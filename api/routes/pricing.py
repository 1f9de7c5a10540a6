"""The current price of every model in the catalog."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AuthedKey, Pool
from api.views import price_fields
from processors.catalog import list_current_prices
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
        models=[ModelPriceOut(price_version_id=v.id, **price_fields(v)) for v in versions]
    )
