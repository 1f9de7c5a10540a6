"""Admin pricing route: add a price version of a model (model ids contain '/')."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import AdminKey, Pool
from api.errors import Problem
from api.views import price_fields
from processors.catalog import insert_price_version
from processors.pricing import PriceVersion
from schemas.api_admin import PriceIn, PriceVersionOut
from schemas.bounds import Text

router = APIRouter(prefix="/api/v1/admin/pricing", tags=["admin: pricing"])


def _out(v: PriceVersion) -> PriceVersionOut:
    assert v.id is not None
    return PriceVersionOut(id=v.id, **price_fields(v))


@router.put(
    "/models/{model:path}",
    response_model=PriceVersionOut,
    status_code=201,
    summary="Add a price version of a model",
    responses={409: {"description": "a version of this model already starts at effective_from"}},
)
async def put_model_price(
    body: PriceIn,
    pool: Pool,
    principal: AdminKey,
    model: Annotated[
        str,
        Text(256),
        Path(
            description="the model id, slashes included (openai/gpt-4o)",
            examples=["openai/gpt-4o-mini"],
        ),
    ],
) -> PriceVersionOut:
    """A new immutable version from effective_from on; events are priced at their occurred_at.

    Versions are never edited: correct a price by adding a version with a later
    effective_from (and re-rate if needed). The same effective_from again is a 409.
    """
    try:
        v = await insert_price_version(
            pool,
            model=model,
            effective_from=body.effective_from,
            input_per_mtok=body.input_per_mtok,
            output_per_mtok=body.output_per_mtok,
            provider=body.provider,
            cached_input_per_mtok=body.cached_input_per_mtok,
            cache_write_per_mtok=body.cache_write_per_mtok,
            per_request=body.per_request,
            units=body.units,
            created_by=f"api-key:{principal.key_id}",
        )
    except ValueError as exc:  # a price the version refuses (DuplicatePriceVersion is a 409)
        raise Problem(
            422,
            "validation_error",
            f"invalid request: body: {exc}",
            errors=[{"field": "body", "rule": "price", "message": str(exc)}],
        ) from None
    return _out(v)
