"""Pricing a call for the caller's account, and deducting that price idempotently."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import asyncpg
from fastapi import APIRouter, Request, Response

from api.catalog_cache import CatalogCache
from api.deps import Pool, SettingsDep, TargetAccount
from api.errors import Problem, invalid_field
from api.metrics import LEDGER_WRITES
from api.routes.credits import DEDUCT_RESPONSES
from api.settings import ApiSettings
from api.views import REPLAYED_HEADER, entry_out
from processors.ledger import (
    EntryResult,
    IdempotencyConflict,
    post_entry,
    read_account_or_new,
    same_request,
)
from processors.ledger.grant_queries import burns_of
from processors.ledger.queries import find_idempotent_row
from processors.pricing import CostBreakdown, Unpriced, price_event
from schemas.api_common import ProblemOut
from schemas.api_credits import (
    CalculateAndDeductIn,
    CalculateAndDeductOut,
    CalculateCostIn,
    CostOut,
)
from schemas.bounds import CostOutOfBounds, check_cost_micros

router = APIRouter(prefix="/api/v1/credits", tags=["costs"])


def _unpriced(exc: Unpriced) -> Problem:
    field = f"body.units.{exc.unit}" if exc.unit else "body.model"
    rule = "unpriced_unit" if exc.unit else "unknown_model"
    return invalid_field(field, rule, str(exc))


async def _price(
    request: Request,
    pool: asyncpg.Pool,
    settings: ApiSettings,
    account_id: str,
    body: CalculateCostIn,
) -> tuple[CostOut, int]:
    """The cost answer and the cost in micro-credits."""
    at = body.occurred_at or datetime.now(UTC)
    cache: CatalogCache = request.app.state.catalog_cache
    catalog = await cache.get(pool)
    state = await read_account_or_new(
        pool, account_id=account_id, default_tier=settings.default_tier
    )
    try:
        version = catalog.require(body.model, at)
        terms = settings.ledger_policy().terms(state.price_multiplier)
        cost: CostBreakdown = price_event(body, version, terms)
        check_cost_micros(cost.cost_micros)
    except Unpriced as exc:
        raise _unpriced(exc) from None
    except CostOutOfBounds as exc:
        raise invalid_field("body", exc.rule, str(exc)) from None
    out = CostOut(model=version.model, occurred_at=at, tier=state.tier, **cost.as_wire())
    return out, cost.cost_micros


@router.post(
    "/calculate-cost",
    summary="What a call would cost (no side effect)",
    responses={422: {"model": ProblemOut, "description": "invalid input, or `model` unknown"}},
)
async def calculate_cost(
    body: CalculateCostIn,
    request: Request,
    account_id: TargetAccount,
    pool: Pool,
    settings: SettingsDep,
) -> CostOut:
    """Price the token buckets and units with the version in force at `occurred_at` (default
    now), the account's tier multiplier and, for `byok`, the platform fee. Exact per bucket,
    rounded once (half-even) to the micro-credit. Nothing is written.
    """
    cost, _ = await _price(request, pool, settings, account_id, body)
    return cost


def _fingerprint(body: CalculateAndDeductIn) -> bytes:
    data = body.model_dump(mode="json", exclude={"idempotency_key"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).digest()


def _answer(result: EntryResult, response: Response) -> CalculateAndDeductOut:
    """The answer of a priced deduction, from its ledger row (a replay: priced as it was)."""
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    assert result.row.priced is not None  # written with the row by every calculate-and-deduct
    return CalculateAndDeductOut(
        **entry_out(result).model_dump(), cost=CostOut.model_validate(result.row.priced)
    )


@router.post(
    "/calculate-and-deduct",
    summary="Price a call and deduct it (idempotent)",
    responses=DEDUCT_RESPONSES,
)
async def calculate_and_deduct(
    body: CalculateAndDeductIn,
    request: Request,
    response: Response,
    account_id: TargetAccount,
    pool: Pool,
    settings: SettingsDep,
) -> CalculateAndDeductOut:
    """Price as calculate-cost does, then deduct that cost like /deduct (402 when it would
    overdraw or pass the cap). The same `idempotency_key` and body answer the original
    result, priced as it was then (`replayed: true`); another body with that key is a 409.
    """
    # The ledger owns the key: its row keeps the request's fingerprint and the pricing it was
    # answered with. A request already answered is replayed before pricing (a price changed
    # since must not matter); a concurrent twin is replayed by post_entry under the row lock.
    digest = _fingerprint(body)
    policy = settings.ledger_policy()
    original = await find_idempotent_row(
        pool, account_id=account_id, idempotency_key=body.idempotency_key
    )
    if original is not None:
        if not same_request(original, "deduction", 0, None, digest):
            raise IdempotencyConflict(body.idempotency_key, original)
        state = await read_account_or_new(
            pool, account_id=account_id, default_tier=policy.default_tier
        )
        burns = tuple(await burns_of(pool, transaction_ids=[original.id]))
        return _answer(EntryResult(original, state, replayed=True, burns=burns), response)
    cost, amount = await _price(request, pool, settings, account_id, body)
    async with pool.acquire() as conn:
        result = await post_entry(
            conn,
            account_id=account_id,
            type="deduction",
            amount_micros=-amount,
            reason=body.reason or f"usage of {cost.model}",
            idempotency_key=body.idempotency_key,
            policy=policy,
            enforce_limits=True,
            model=cost.model,
            request_hash=digest,
            priced=cost.model_dump(mode="json"),
        )
    if not result.replayed:
        LEDGER_WRITES.labels(type="deduction").inc()
    return _answer(result, response)
