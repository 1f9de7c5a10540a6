"""MeterlineClient: the HTTP API from Python (async; MeterlineSyncClient is its blocking twin).

::

    async with MeterlineClient() as ml:            # METERLINE_API_URL, METERLINE_API_KEY
        hold = await ml.reserve("0.25", account_id="acme", idempotency_key=call_id)
        ...                                        # make the model call
        await ml.publish([event])                  # or ml.release(hold.reservation_id)

Every answer is a typed result with amounts as Decimal; every error answer is raised as the
MeterlineError subclass of its status (PaymentRequired, Conflict, ValidationFailed,
RateLimited, Unavailable…) carrying the problem+json fields. 429 and 503 answers and
connection failures are retried with capped exponential backoff, never sooner than the
answer's Retry-After; every route the client calls is safe to repeat (reads, idempotency keys,
or events deduplicated by (source, event_id)). One connection pool per client.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from producers.client_types import (
    Authorization,
    Balance,
    Cost,
    MeterlineError,
    Reservation,
    Unreachable,
    error_for,
)
from schemas.event import UsageEvent

__all__ = ["ClientSettings", "MeterlineClient", "MeterlineSyncClient", "money_text"]

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 503})
CREDITS = "/api/v1/credits"


class ClientSettings(BaseSettings):
    """Where the API is and the key to use (METERLINE_API_URL, METERLINE_API_KEY)."""

    model_config = SettingsConfigDict(env_prefix="METERLINE_", extra="ignore")

    api_url: str = Field(default="", description="the meterline API, e.g. http://meterline:8000")
    api_key: str = Field(default="", description="a Bearer key: admin, or the account's own")


def money_text(amount: Decimal | str | int) -> str:
    """An amount as the wire's decimal string; a binary float is refused."""
    if isinstance(amount, float | bool):
        raise TypeError('amounts are never binary floats: pass a Decimal or a string like "1.5"')
    return format(amount if isinstance(amount, Decimal) else Decimal(str(amount)), "f")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request and how to read its answer: the part the async and sync clients share."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, str] | None = None


def _who(account_id: str | None) -> dict[str, str] | None:
    return {"account_id": account_id} if account_id is not None else None


def _event_json(event: UsageEvent | Mapping[str, Any]) -> Any:
    if isinstance(event, UsageEvent):
        return event.model_dump(mode="json", exclude_none=True)
    return dict(event)


class _Calls:
    """The API's routes as _Call values."""

    @staticmethod
    def balance(account_id: str | None) -> _Call[Balance]:
        return _Call("GET", f"{CREDITS}/balance", Balance.from_wire, params=_who(account_id))

    @staticmethod
    def authorize(
        estimated_cost: Decimal | str | int, account_id: str | None
    ) -> _Call[Authorization]:
        body = {"estimated_cost": money_text(estimated_cost)}
        return _Call(
            "POST", f"{CREDITS}/authorize", Authorization.from_wire, body, _who(account_id)
        )

    @staticmethod
    def calculate_cost(model: str, account_id: str | None, usage: Mapping[str, Any]) -> _Call[Cost]:
        body = {"model": model, **usage}
        if isinstance(body.get("occurred_at"), datetime):
            body["occurred_at"] = body["occurred_at"].isoformat()
        return _Call("POST", f"{CREDITS}/calculate-cost", Cost.from_wire, body, _who(account_id))

    @staticmethod
    def reserve(
        amount: Decimal | str | int,
        account_id: str | None,
        ttl_seconds: int,
        idempotency_key: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> _Call[Reservation]:
        body: dict[str, Any] = {
            "amount": money_text(amount),
            "ttl_seconds": ttl_seconds,
            "idempotency_key": idempotency_key or uuid.uuid4().hex,
        }
        if metadata:
            body["metadata"] = dict(metadata)
        return _Call(
            "POST", f"{CREDITS}/reservations", Reservation.from_wire, body, _who(account_id)
        )

    @staticmethod
    def get_reservation(reservation_id: str, account_id: str | None) -> _Call[Reservation]:
        path = f"{CREDITS}/reservations/{reservation_id}"
        return _Call("GET", path, Reservation.from_wire, params=_who(account_id))

    @staticmethod
    def reservations(account_id: str | None) -> _Call[list[Reservation]]:
        def parse(body: Any) -> list[Reservation]:
            return [Reservation.from_wire(item) for item in body["items"]]

        return _Call("GET", f"{CREDITS}/reservations", parse, params=_who(account_id))

    @staticmethod
    def release(reservation_id: str, account_id: str | None) -> _Call[Reservation]:
        path = f"{CREDITS}/reservations/{reservation_id}/release"
        return _Call("POST", path, Reservation.from_wire, params=_who(account_id))

    @staticmethod
    def publish(
        events: UsageEvent | Mapping[str, Any] | Iterable[UsageEvent | Mapping[str, Any]],
        account_id: str | None,
    ) -> _Call[int]:
        if isinstance(events, UsageEvent | Mapping):
            body: Any = _event_json(events)
        else:
            body = [_event_json(e) for e in events]
        return _Call(
            "POST", "/api/v1/usage/events", lambda b: int(b["accepted"]), body, _who(account_id)
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(str(value)))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def _error(response: httpx.Response) -> MeterlineError:
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    detail = str(problem.get("detail") or response.text[:500] or response.reason_phrase)
    return error_for(response.status_code)(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}",
        status=response.status_code,
        code=problem.get("code"),
        problem=problem,
        retry_after=_retry_after(response),
    )


def _unreachable(exc: httpx.TransportError, url: str) -> Unreachable:
    return Unreachable(f"meterline API at {url} unreachable: {exc!r}", code="unreachable")


class _Base:
    def __init__(
        self,
        api_url: str | None,
        api_key: str | None,
        *,
        retries: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        settings = ClientSettings()
        self.api_url = (api_url or settings.api_url).rstrip("/")
        if not self.api_url:
            raise ValueError("meterline API URL unknown: set METERLINE_API_URL or pass api_url=")
        self.api_key = api_key or settings.api_key
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "meterline-client"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _delay(self, attempt: int, error: MeterlineError) -> float | None:
        """Seconds to wait before retrying `error`, or None to give up (raise it)."""
        if attempt >= self.retries:
            return None
        if not isinstance(error, Unreachable) and error.status not in RETRY_STATUSES:
            return None
        wait: float = min(self.max_backoff, self.backoff * 2.0**attempt)
        if error.retry_after is not None:
            if error.retry_after > self.max_backoff:
                return None  # the server asks for longer than we may wait: say so now
            wait = max(wait, error.retry_after)
        return wait

    def _answer(self, call: _Call[T], response: httpx.Response) -> T | MeterlineError:
        if response.status_code >= 400:
            return _error(response)
        return call.parse(response.json())


class MeterlineClient(_Base):
    """The async client; use it in `async with`, or call `aclose()` when done."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_url, api_key, retries=retries, backoff=backoff, max_backoff=max_backoff
        )
        self._http = httpx.AsyncClient(
            base_url=self.api_url, headers=self._headers(), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> MeterlineClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
                result = self._answer(call, response)
            except httpx.TransportError as exc:
                result = _unreachable(exc, self.api_url)
            if not isinstance(result, MeterlineError):
                return result
            wait = self._delay(attempt, result)
            if wait is None:
                raise result
            attempt += 1
            await asyncio.sleep(wait)

    async def balance(self, *, account_id: str | None = None) -> Balance:
        """The account's balance, spend, cap (and available and held, when holds exist)."""
        return await self._run(_Calls.balance(account_id))

    async def authorize(
        self, estimated_cost: Decimal | str | int, *, account_id: str | None = None
    ) -> Authorization:
        """Whether a call of this estimated cost may go ahead now (nothing is held)."""
        return await self._run(_Calls.authorize(estimated_cost, account_id))

    async def calculate_cost(
        self, model: str, *, account_id: str | None = None, **usage: Any
    ) -> Cost:
        """What the token buckets (input_tokens=, output_tokens=, units=…) of `model` cost."""
        return await self._run(_Calls.calculate_cost(model, account_id, usage))

    async def reserve(
        self,
        amount: Decimal | str | int,
        *,
        account_id: str | None = None,
        ttl_seconds: int = 300,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Hold `amount` for `ttl_seconds`; PaymentRequired when it does not fit."""
        call = _Calls.reserve(amount, account_id, ttl_seconds, idempotency_key, metadata)
        return await self._run(call)

    async def get_reservation(
        self, reservation_id: str, *, account_id: str | None = None
    ) -> Reservation:
        """A hold's current state."""
        return await self._run(_Calls.get_reservation(reservation_id, account_id))

    async def reservations(self, *, account_id: str | None = None) -> list[Reservation]:
        """The account's active holds, soonest expiry first."""
        return await self._run(_Calls.reservations(account_id))

    async def release(self, reservation_id: str, *, account_id: str | None = None) -> Reservation:
        """Free a hold (answers its current state when it is no longer active)."""
        return await self._run(_Calls.release(reservation_id, account_id))

    async def publish(
        self,
        events: UsageEvent | Mapping[str, Any] | Iterable[UsageEvent | Mapping[str, Any]],
        *,
        account_id: str | None = None,
    ) -> int:
        """HTTP ingest of one event or many (any supported shape); how many were accepted."""
        return await self._run(_Calls.publish(events, account_id))


class MeterlineSyncClient(_Base):
    """The blocking twin of MeterlineClient: the same methods, the same answers and errors."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_url, api_key, retries=retries, backoff=backoff, max_backoff=max_backoff
        )
        self._http = httpx.Client(
            base_url=self.api_url, headers=self._headers(), timeout=timeout, transport=transport
        )

    def __enter__(self) -> MeterlineSyncClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
                result = self._answer(call, response)
            except httpx.TransportError as exc:
                result = _unreachable(exc, self.api_url)
            if not isinstance(result, MeterlineError):
                return result
            wait = self._delay(attempt, result)
            if wait is None:
                raise result
            attempt += 1
            time.sleep(wait)

    def balance(self, *, account_id: str | None = None) -> Balance:
        """See MeterlineClient.balance."""
        return self._run(_Calls.balance(account_id))

    def authorize(
        self, estimated_cost: Decimal | str | int, *, account_id: str | None = None
    ) -> Authorization:
        """See MeterlineClient.authorize."""
        return self._run(_Calls.authorize(estimated_cost, account_id))

    def calculate_cost(self, model: str, *, account_id: str | None = None, **usage: Any) -> Cost:
        """See MeterlineClient.calculate_cost."""
        return self._run(_Calls.calculate_cost(model, account_id, usage))

    def reserve(
        self,
        amount: Decimal | str | int,
        *,
        account_id: str | None = None,
        ttl_seconds: int = 300,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """See MeterlineClient.reserve."""
        return self._run(_Calls.reserve(amount, account_id, ttl_seconds, idempotency_key, metadata))

    def get_reservation(self, reservation_id: str, *, account_id: str | None = None) -> Reservation:
        """See MeterlineClient.get_reservation."""
        return self._run(_Calls.get_reservation(reservation_id, account_id))

    def reservations(self, *, account_id: str | None = None) -> list[Reservation]:
        """See MeterlineClient.reservations."""
        return self._run(_Calls.reservations(account_id))

    def release(self, reservation_id: str, *, account_id: str | None = None) -> Reservation:
        """See MeterlineClient.release."""
        return self._run(_Calls.release(reservation_id, account_id))

    def publish(
        self,
        events: UsageEvent | Mapping[str, Any] | Iterable[UsageEvent | Mapping[str, Any]],
        *,
        account_id: str | None = None,
    ) -> int:
        """See MeterlineClient.publish."""
        return self._run(_Calls.publish(events, account_id))
