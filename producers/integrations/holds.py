"""The pre-call hold: estimate a call's worst-case cost with meterline's prices, reserve it, and
say no in a way the proxy can answer (CallRefused carries the HTTP status).

Policy (IntegrationSettings): the worst case (prompt tokens + max output) priced by
POST /credits/calculate-cost, capped by ``max_hold``; a model meterline cannot price holds
``unpriced_hold``. When the hold does not fit, ``on_insufficient`` refuses (402) or holds what
is still available, so a small balance is not blocked by a large max_tokens. When meterline
cannot be reached, ``on_unreachable`` lets the call through without a hold (``open``) or
refuses it with 503 (``closed``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from producers.client import MeterlineClient
from producers.client_types import (
    MeterlineError,
    PaymentRequired,
    Reservation,
    Unavailable,
    ValidationFailed,
)
from producers.integrations.settings import IntegrationSettings

log = logging.getLogger("meterline.integrations")

SMALLEST_HOLD = Decimal("0.000001")  # a free call still proves the account may spend
_UNPRICED_RULES = frozenset({"unknown_model", "unpriced_unit"})
# What a call itself puts in meterline's requests: a 422 naming only these is the call's fault
# (a model name or an account id meterline cannot meter), not the proxy's settings.
_CALL_FIELDS = frozenset({"body.model", "query.account_id"})


@dataclass(frozen=True)
class Hold:
    """What the pre-call did for one call: who pays, and the hold (None: let through unheld)."""

    account_id: str
    reservation_id: str | None
    amount: Decimal
    created: float


class CallRefused(Exception):
    """meterline said no (402), or could not be asked and the policy is fail-closed (503)."""

    def __init__(self, status_code: int, code: str, message: str, **problem: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.problem = problem

    def body(self) -> dict[str, Any]:
        """The refusal as the JSON a client reads."""
        return {"message": self.message, "code": self.code, **self.problem}


def _left(exc: PaymentRequired) -> Decimal | None:
    """What the 402 says is still available (the smaller of balance and cap left)."""
    found = [
        Decimal(str(exc.problem[k]))
        for k in ("available", "cap_remaining")
        if exc.problem.get(k) is not None
    ]
    return min(found) if found else None


def _misconfigured(exc: MeterlineError, account_id: str) -> CallRefused:
    return CallRefused(
        503,
        "metering_misconfigured",
        f"meterline refused the proxy's request ({exc.status} {exc.code}): {exc.detail}",
        account_id=account_id,
    )


class HoldPolicy:
    """Turns a call's token estimate into a reservation, by the settings' policy."""

    def __init__(self, settings: IntegrationSettings, client: MeterlineClient) -> None:
        self.settings = settings
        self.client = client

    async def estimate(
        self, *, account_id: str, model: str, input_tokens: int, output_tokens: int
    ) -> Decimal:
        """The worst-case cost by meterline's prices, capped by max_hold."""
        try:
            cost = await self.client.calculate_cost(
                model,
                account_id=account_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
            amount = cost.cost
        except ValidationFailed as exc:
            if not {e.get("rule") for e in exc.errors} & _UNPRICED_RULES:
                raise
            log.warning("meterline cannot price %s; holding %s", model, self.settings.unpriced_hold)
            amount = self.settings.unpriced_hold
        if self.settings.max_hold is not None:
            amount = min(amount, self.settings.max_hold)
        return max(amount, SMALLEST_HOLD)

    async def _reserve(
        self, amount: Decimal, *, account_id: str, call_id: str, metadata: dict[str, Any]
    ) -> Reservation:
        ttl = self.settings.hold_ttl_seconds
        # Unique per attempt: the client's retries of this request reuse it, but a call id a
        # client chose twice never answers an old (settled) hold.
        key = f"litellm:{call_id[:100]}:{uuid.uuid4().hex[:12]}"
        try:
            return await self.client.reserve(
                amount,
                account_id=account_id,
                ttl_seconds=ttl,
                idempotency_key=key,
                metadata=metadata,
            )
        except PaymentRequired as exc:
            left = _left(exc)
            if self.settings.on_insufficient != "hold_available" or not left or left <= 0:
                raise
            log.info("worst case %s does not fit %s; holding the %s left", amount, account_id, left)
            return await self.client.reserve(
                min(left, amount),
                account_id=account_id,
                ttl_seconds=ttl,
                idempotency_key=f"{key}:available",
                metadata={**metadata, "worst_case": format(amount, "f")},
            )

    async def hold(
        self,
        *,
        call_id: str,
        account_id: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
    ) -> Hold:
        """Reserve the call's estimate for the account; CallRefused when the call must not run."""
        metadata = {"litellm_call_id": call_id, "model": model}
        try:
            amount = await self.estimate(
                account_id=account_id,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
            res = await self._reserve(
                amount, account_id=account_id, call_id=call_id, metadata=metadata
            )
        except PaymentRequired as exc:
            raise CallRefused(
                402,
                exc.code or "insufficient_credit",
                f"meterline refused the call for account {account_id!r}: "
                f"{exc.problem.get('detail') or exc.detail}",
                account_id=account_id,
                **{k: exc.problem[k] for k in ("available", "cap_remaining") if k in exc.problem},
            ) from exc
        except Unavailable as exc:
            if self.settings.on_unreachable == "open":
                log.warning("meterline unavailable, call %s goes ahead unheld: %s", call_id, exc)
                return Hold(account_id, None, Decimal(0), time.monotonic())
            raise CallRefused(
                503,
                "metering_unavailable",
                "meterline cannot be reached to reserve credit for this call; retry later",
                account_id=account_id,
            ) from exc
        except ValidationFailed as exc:
            fields = {str(e.get("field")) for e in exc.errors}
            if not fields or not fields <= _CALL_FIELDS:
                raise _misconfigured(exc, account_id) from exc
            # The call names what no usage event can carry: refuse it (400) rather than let a
            # client retry a 503 that can never pass, or run a call that cannot be billed.
            why = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in exc.errors)
            raise CallRefused(
                400,
                "not_meterable",
                f"meterline cannot meter this call for account {account_id[:128]!r}: {why}",
                account_id=account_id[:128],
                errors=exc.errors,
            ) from exc
        except MeterlineError as exc:
            # 401/403/422: the proxy's key or settings are wrong; refusing says so at once.
            raise _misconfigured(exc, account_id) from exc
        return Hold(account_id, res.reservation_id, res.amount, time.monotonic())

    async def release(self, hold: Hold) -> None:
        """Free a hold after a failed call; the TTL frees it anyway when this cannot."""
        if hold.reservation_id is None:
            return
        try:
            await self.client.release(hold.reservation_id, account_id=hold.account_id)
        except MeterlineError as exc:
            log.warning("hold %s not released (its TTL will): %s", hold.reservation_id, exc)
