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
from api.queries import idempotency as idem
from api.routes.credits import DEDUCT_RESPONSES
from api.settings import ApiSettings
from api.views import REPLAYED_HEADER, account_state, entry_out
from processors.ledger import IdempotencyConflict, post_entry
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

_SCOPE = "calculate-and-deduct:"


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
    state = await account_state(pool, account_id=account_id, default_tier=settings.default_tier)
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


def _replay(
    stored: idem.StoredResponse, digest: bytes, key: str, response: Response
) -> CalculateAndDeductOut:
    if stored.request_hash != digest:
        raise Problem(
            409,
            "idempotency_conflict",
            f"idempotency_key {key!r} was already used for a different request; use a new key",
            idempotency_key=key,
        )
    response.headers[REPLAYED_HEADER] = "true"
    return CalculateAndDeductOut.model_validate({**stored.response, "replayed": True})


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
    digest = _fingerprint(body)
    scope = _SCOPE + account_id
    stored = await idem.find_response(pool, scope=scope, key=body.idempotency_key)
    if stored is not None:
        return _replay(stored, digest, body.idempotency_key, response)
    cost, amount = await _price(request, pool, settings, account_id, body)
    async with pool.acquire() as conn, conn.transaction():
        result = await post_entry(
            conn,
            account_id=account_id,
            type="deduction",
            amount_micros=-amount,
            reason=body.reason or f"usage of {cost.model}",
            idempotency_key=body.idempotency_key,
            policy=settings.ledger_policy(),
            enforce_limits=True,
            model=cost.model,
        )
        if result.replayed:
            # A concurrent twin committed first (we queued on the account lock behind it).
            stored = await idem.find_response(conn, scope=scope, key=body.idempotency_key)
            if stored is None:
                raise IdempotencyConflict(body.idempotency_key, result.row)
            return _replay(stored, digest, body.idempotency_key, response)
        out = CalculateAndDeductOut(**entry_out(result).model_dump(), cost=cost)
        await idem.save_response(
            conn,
            scope=scope,
            key=body.idempotency_key,
            request_hash=digest,
            response=out.model_dump(mode="json"),
        )
    LEDGER_WRITES.labels(type="deduction").inc()
    return out
