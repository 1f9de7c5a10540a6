"""FastAPI dependencies as Annotated aliases: the pool, settings, the caller's key and account."""

from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Query, Request
from limits import RateLimitItem, parse
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from api.client_address import client_address
from api.errors import RETRY_AFTER_S, Problem, invalid_field
from api.key_cache import KeyCache
from api.query import QueryParam, read_query
from api.rate_limit import MemoryFixedWindow, RateLimiter
from api.settings import ApiSettings
from processors.api_keys import (
    MAX_KEY_CHARS,
    Principal,
    authenticate_key,
    hash_key,
    parse_key_id,
)
from producers.keeper import PublisherKeeper
from producers.publisher import UsagePublisher
from schemas.bounds import Text

__all__ = [
    "ACCOUNT_ID",
    "AdminKey",
    "AuthedKey",
    "Pool",
    "Principal",
    "SettingsDep",
    "TargetAccount",
    "app_pool",
    "app_settings",
    "forbid_other_account",
    "hot_target_account",
    "make_rate_limiter",
]


# The dependencies are `async def` although they do not await: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop per dependency and request.


def app_pool(request: Request) -> asyncpg.Pool:
    """The app's asyncpg pool (created in the lifespan)."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def app_settings(request: Request) -> ApiSettings:
    """The settings the app was created with."""
    settings: ApiSettings = request.app.state.settings
    return settings


# FastAPI solves each dependency of each request recursively, cached or not (its query,
# header and cookie parameters parsed each time): ~10 us a node. The hot routes (balance,
# authorize) and `authenticate` read the pool and settings with the two functions above
# instead of depending on Pool and SettingsDep.


async def get_pool(request: Request) -> asyncpg.Pool:
    """The app's asyncpg pool, as a dependency."""
    return app_pool(request)


async def get_app_settings(request: Request) -> ApiSettings:
    """The app's settings, as a dependency."""
    return app_settings(request)


async def get_publisher(request: Request) -> UsagePublisher:
    """The connected UsagePublisher, or 503 (Retry-After) while Kafka cannot be reached."""
    keeper: PublisherKeeper = request.app.state.publisher_keeper
    publisher = keeper.current
    if publisher is None:
        raise Problem(
            503,
            "kafka_unavailable",
            f"the usage publisher is not connected to Kafka ({keeper.last_error}); it keeps "
            f"reconnecting by itself: retry in {RETRY_AFTER_S} s",
            headers={"Retry-After": str(RETRY_AFTER_S)},
            dependency="kafka",
        )
    return publisher


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
SettingsDep = Annotated[ApiSettings, Depends(get_app_settings)]


def make_rate_limiter(storage_uri: str) -> RateLimiter:
    """A fixed-window limiter: in process for memory://, else over the limits storage the
    URI names.

    Fixed, not moving: the moving window of the memory storage keeps one asyncio.Lock per hit
    and sweeps them all in a background task, 27 us a hit at 20/second and 140 us at high
    limits, against 3 us for a counter (and one INCR instead of a Lua script on redis). The
    price: a key may pass up to twice its limit across the boundary of two windows. In
    process, api.rate_limit's counter, not limits' memory storage (a task per hit).
    """
    if storage_uri.removeprefix("async+").startswith("memory://"):
        return MemoryFixedWindow()
    uri = storage_uri if storage_uri.startswith("async+") else "async+" + storage_uri
    return FixedWindowRateLimiter(storage_from_string(uri))


@lru_cache(maxsize=256)
def parse_limit(text: str) -> RateLimitItem:
    """A rate-limit string such as "20/second" (validated where tiers are written)."""
    return parse(text)


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="meterline"'},
    )


async def _too_many(
    limiter: RateLimiter, item: RateLimitItem, identifiers: tuple[str, str], what: str
) -> Problem:
    """The 429 once `identifiers` are past `item`: Retry-After is when their window ends."""
    stats = await limiter.get_window_stats(item, *identifiers)
    retry_after = max(1, math.ceil(stats.reset_time - time.time()))
    return Problem(
        429,
        "rate_limited",
        f"rate limit of {item} {what} exceeded; retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
        limit=str(item),
        retry_after=retry_after,
    )


async def _rate_limit(request: Request, principal: Principal, settings: ApiSettings) -> None:
    limiter: RateLimiter | None = getattr(request.app.state, "limiter", None)
    if limiter is None:
        return
    item = parse_limit(principal.rate_limit or settings.admin_rate_limit)
    if await limiter.hit(item, "key", principal.key_id):
        return
    what = f"for this key (tier {principal.tier or 'admin'})"
    raise await _too_many(limiter, item, ("key", principal.key_id), what)


async def _limit_lookups(request: Request, settings: ApiSettings) -> None:
    """Count a lookup of a key unknown here against the client's address; 429 past
    METERLINE_API_KEY_LOOKUP_LIMIT, before anything reaches Postgres.

    A refused key is answered from memory, but each new random key costs a lookup: without
    this, one client spraying well-formed keys loads the database without bound.
    """
    limiter: RateLimiter | None = getattr(request.app.state, "limiter", None)
    if limiter is None:
        return
    item = parse_limit(settings.api_key_lookup_limit)
    address = client_address(request)
    if await limiter.hit(item, "lookup", address):
        return
    what = "on lookups of unknown API keys from this address"
    raise await _too_many(limiter, item, ("lookup", address), what)


async def authenticate(request: Request) -> Principal:
    """The principal of the Bearer key (401 when missing or wrong), rate-limited by its tier;
    the lookups of keys not known here are limited per client address (429)."""
    pool, settings = app_pool(request), app_settings(request)
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <key>'")
    key = key.strip()
    if len(key) > MAX_KEY_CHARS:
        # Longer than any key (the HTTP server may pass megabytes): not hashed, not looked up.
        raise _unauthorized("the API key is invalid or revoked")
    cache: KeyCache = request.app.state.key_cache  # set by create_app (TTL 0: keeps nothing)
    digest = hash_key(key)
    epoch = cache.epoch
    principal = cache.get(digest)
    if principal is None:
        # Not a key's shape: refused without a lookup, so not counted against the address
        # (checked past the cache, which holds only keys that authenticated).
        if parse_key_id(key) is None or cache.refused(digest):
            raise _unauthorized("the API key is invalid or revoked")
        if not cache.known(digest):
            await _limit_lookups(request, settings)
        principal = await authenticate_key(pool, key, default_tier=settings.default_tier)
        if principal is None:
            cache.refuse(digest)
            raise _unauthorized("the API key is invalid or revoked")
        cache.put(digest, principal, epoch=epoch)
    else:
        cache.refresh_due(
            digest, lambda: authenticate_key(pool, key, default_tier=settings.default_tier)
        )
    await _rate_limit(request, principal, settings)
    return principal


AuthedKey = Annotated[Principal, Depends(authenticate)]


async def require_admin(principal: AuthedKey) -> Principal:
    """The principal, which must hold an admin key (403 otherwise)."""
    if not principal.is_admin:
        raise Problem(403, "forbidden", "this route needs an admin key; this key has scope 'user'")
    return principal


AdminKey = Annotated[Principal, Depends(require_admin)]


def forbid_other_account(principal: Principal, account_id: str | None) -> None:
    """403 when a user key names an account other than its own (admins may name any)."""
    if not principal.is_admin and account_id is not None and account_id != principal.account_id:
        raise Problem(
            403,
            "forbidden",
            "a user key can only act on its own account; drop account_id or use an admin key",
        )


ACCOUNT_ID_HELP = (
    "The account to act on: admin keys must give it; a user key may only give its own account."
)
AccountIdText = Annotated[str, Text(128)]
ACCOUNT_ID = QueryParam[str]("account_id", AccountIdText, ACCOUNT_ID_HELP)


def resolve_target(principal: Principal, account_id: str | None) -> str:
    """The account a user route acts on: the key's own, or the one an admin names."""
    if principal.is_admin:
        if account_id is None:
            raise invalid_field("query.account_id", "missing", "an admin key must name the account")
        return account_id
    forbid_other_account(principal, account_id)
    own = principal.account_id
    assert own is not None  # the schema requires an account for user keys
    return own


async def target_account(
    principal: AuthedKey,
    account_id: Annotated[AccountIdText | None, Query(description=ACCOUNT_ID_HELP)] = None,
) -> str:
    """The account a user route acts on: the key's own, or the one an admin names."""
    return resolve_target(principal, account_id)


async def hot_target_account(request: Request, *more: QueryParam[Any]) -> tuple[str, list[Any]]:
    """What TargetAccount and the route's own query parameters `more` answer, read without
    FastAPI's parameter solving (api.query says why), in FastAPI's order: 401 (and 429)
    first; a bad account_id with every bad parameter of `more`; then 403, or 422 when an admin
    names no account; then the bad parameters of `more`. Returns (account, values of `more`).
    A route that uses it documents ACCOUNT_ID and `more` in its openapi_extra."""
    principal = await authenticate(request)
    errors: list[Any] = []
    account_id = ACCOUNT_ID.read(request, errors)
    if errors:
        read_query(request, *more, errors=errors)
    account = resolve_target(principal, account_id)
    return account, read_query(request, *more, errors=errors)


TargetAccount = Annotated[str, Depends(target_account)]
