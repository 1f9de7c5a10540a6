"""The price catalog in PostgreSQL (table price_versions): load, insert, seed, list."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from processors.pricing import Catalog, PriceVersion, plain
from schemas.bounds import MAX_CREDITS
from schemas.errors import DomainError

__all__ = [
    "DuplicatePriceVersion",
    "UnusablePrice",
    "insert_price_version",
    "insert_price_versions",
    "list_current_prices",
    "list_price_history",
    "load_catalog",
    "load_catalog_checked",
    "seed_catalog",
    "shipped_versions",
]

# The queries, each spelled out whole. units is read as text so a jsonb codec on the pool
# cannot change what comes back.
_SELECT_ALL = (
    "SELECT id, model, provider, effective_from, input_per_mtok, cached_input_per_mtok,"
    " cache_write_per_mtok, output_per_mtok, per_request, units::text AS units"
    " FROM price_versions"
)
_INSERT_MANY = (
    "INSERT INTO price_versions (model, provider, effective_from, input_per_mtok,"
    " cached_input_per_mtok, cache_write_per_mtok, output_per_mtok, per_request, units,"
    " created_by)"
    " SELECT m, p, ef, i, ci, cw, o, pr, u::jsonb, $10"
    " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::numeric[], $5::numeric[],"
    "             $6::numeric[], $7::numeric[], $8::numeric[], $9::text[])"
    "      AS t(m, p, ef, i, ci, cw, o, pr, u)"
    " ON CONFLICT (model, effective_from) DO NOTHING"
    " RETURNING id, model, provider, effective_from, input_per_mtok, cached_input_per_mtok,"
    " cache_write_per_mtok, output_per_mtok, per_request, units::text AS units"
)
_SELECT_CURRENT = (
    "SELECT DISTINCT ON (model) id, model, provider, effective_from, input_per_mtok,"
    " cached_input_per_mtok, cache_write_per_mtok, output_per_mtok, per_request,"
    " units::text AS units"
    " FROM price_versions WHERE effective_from <= coalesce($1::timestamptz, now())"
    " ORDER BY model, effective_from DESC"
)
_SELECT_HISTORY = _SELECT_ALL + " WHERE model = ANY($1::text[]) ORDER BY model, effective_from"


class DuplicatePriceVersion(DomainError):
    """A price version of this model already starts at this effective_from."""

    code = "duplicate_price_version"
    status = 409

    def __init__(self, model: str, effective_from: datetime) -> None:
        super().__init__(
            f"model {model!r} already has a price version effective from "
            f"{effective_from.isoformat()}; versions are immutable, so add one with a later "
            "effective_from instead",
            model=model,
            effective_from=effective_from.isoformat(),
        )
        self.model = model
        self.effective_from = effective_from


def _units_json(units: Mapping[str, Decimal]) -> str:
    # jsonb of decimal strings: prices stay exact and no float ever enters.
    return json.dumps({name: plain(price) for name, price in sorted(units.items())})


def _units_from(raw: Any) -> dict[str, Decimal]:
    data = json.loads(raw) if isinstance(raw, str | bytes) else (raw or {})
    return {str(name): Decimal(str(price)) for name, price in data.items()}


def _version(row: Mapping[str, Any]) -> PriceVersion:
    return PriceVersion(
        id=row["id"],
        model=row["model"],
        provider=row["provider"],
        effective_from=row["effective_from"],
        input_per_mtok=row["input_per_mtok"],
        cached_input_per_mtok=row["cached_input_per_mtok"],
        cache_write_per_mtok=row["cache_write_per_mtok"],
        output_per_mtok=row["output_per_mtok"],
        per_request=row["per_request"],
        units=_units_from(row["units"]),
    )


log = logging.getLogger("meterline.catalog")
_reported: set[int] = set()  # unusable rows already logged by this process


@dataclass(frozen=True)
class UnusablePrice:
    """A stored price version nothing can price with (written before the bounds, or by hand)."""

    id: int
    model: str
    reason: str


def _usable(row: Mapping[str, Any]) -> PriceVersion:
    """The row as a PriceVersion; ValueError saying why when it cannot price anything."""
    # asyncpg reads ±infinity as a naive datetime, which PriceVersion refuses, as it refuses
    # negative or non-finite prices.
    v = _version(row)
    prices = [v.input_per_mtok, v.output_per_mtok, v.per_request, *v.units.values()]
    prices += [p for p in (v.cached_input_per_mtok, v.cache_write_per_mtok) if p is not None]
    if any(p > MAX_CREDITS for p in prices):
        raise ValueError(f"a price above {MAX_CREDITS} credits")
    return v


def _checked(rows: Iterable[Mapping[str, Any]]) -> tuple[list[PriceVersion], list[UnusablePrice]]:
    good: list[PriceVersion] = []
    bad: list[UnusablePrice] = []
    for r in rows:
        try:
            good.append(_usable(r))
        except (ValueError, ArithmeticError, TypeError) as exc:
            bad.append(UnusablePrice(r["id"], r["model"], str(exc)))
            if r["id"] not in _reported:
                _reported.add(r["id"])
                log.warning(
                    "price version %s of %r skipped, it cannot price anything: %s "
                    "(add a correct version; `meterline pricing list` reports it)",
                    r["id"],
                    r["model"],
                    exc,
                )
    return good, bad


async def load_catalog(conn: asyncpg.Connection | asyncpg.Pool) -> Catalog:
    """Every usable price version in the database, as a Catalog (unusable rows skipped)."""
    catalog, _ = await load_catalog_checked(conn)
    return catalog


async def load_catalog_checked(
    conn: asyncpg.Connection | asyncpg.Pool,
) -> tuple[Catalog, list[UnusablePrice]]:
    """The Catalog of the usable versions, and the rows skipped with why.

    A row nothing can use (an effective_from of ±infinity stored before the bounds, a negative
    price written by hand) is skipped with one log line, so one bad row never stops the
    worker or every price read.
    """
    good, bad = _checked(await conn.fetch(_SELECT_ALL))
    return Catalog(good), bad


async def insert_price_version(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    model: str,
    effective_from: datetime,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
    provider: str | None = None,
    cached_input_per_mtok: Decimal | None = None,
    cache_write_per_mtok: Decimal | None = None,
    per_request: Decimal = Decimal(0),
    units: Mapping[str, Decimal] | None = None,
    created_by: str | None = None,
) -> PriceVersion:
    """Add a new price version; raises DuplicatePriceVersion if (model, effective_from) exists."""
    # Validates before touching the database (aware time, finite non-negative decimals).
    v = PriceVersion(
        id=None,
        model=model,
        provider=provider,
        effective_from=effective_from,
        input_per_mtok=input_per_mtok,
        cached_input_per_mtok=cached_input_per_mtok,
        cache_write_per_mtok=cache_write_per_mtok,
        output_per_mtok=output_per_mtok,
        per_request=per_request,
        units=units or {},
    )
    inserted = await insert_price_versions(conn, versions=[v], created_by=created_by)
    if not inserted:  # ON CONFLICT (model, effective_from) DO NOTHING skipped it
        raise DuplicatePriceVersion(v.model, v.effective_from)
    return inserted[0]


async def insert_price_versions(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    versions: Sequence[PriceVersion],
    created_by: str | None = None,
) -> list[PriceVersion]:
    """Insert many versions in one statement, skipping (model, effective_from) already present.

    Returns the versions actually inserted, with their ids.
    """
    if not versions:
        return []
    rows = await conn.fetch(
        _INSERT_MANY,
        [v.model for v in versions],
        [v.provider for v in versions],
        [v.effective_from for v in versions],
        [v.input_per_mtok for v in versions],
        [v.cached_input_per_mtok for v in versions],
        [v.cache_write_per_mtok for v in versions],
        [v.output_per_mtok for v in versions],
        [v.per_request for v in versions],
        [_units_json(v.units) for v in versions],
        created_by,
    )
    return [_version(r) for r in rows]


def shipped_versions() -> list[PriceVersion]:
    """The catalog shipped with meterline (processors/data/prices.json), without ids."""
    # Beside this module rather than importlib.resources: an editable install can present
    # `processors` as a namespace package, which resources.files() cannot read from.
    text = (Path(__file__).parent / "data" / "prices.json").read_text("utf-8")
    doc = json.loads(text, parse_float=Decimal)
    default_from = doc["effective_from"]
    out: list[PriceVersion] = []
    for m in doc["models"]:
        out.append(
            PriceVersion(
                id=None,
                model=m["model"],
                provider=m.get("provider"),
                effective_from=datetime.fromisoformat(m.get("effective_from", default_from)),
                input_per_mtok=Decimal(m["input_per_mtok"]),
                cached_input_per_mtok=_opt(m.get("cached_input_per_mtok")),
                cache_write_per_mtok=_opt(m.get("cache_write_per_mtok")),
                output_per_mtok=Decimal(m["output_per_mtok"]),
                per_request=Decimal(m.get("per_request", "0")),
                units={k: Decimal(v) for k, v in (m.get("units") or {}).items()},
            )
        )
    return out


def _opt(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


async def seed_catalog(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Insert the shipped catalog, idempotently; returns how many versions were new."""
    inserted = await insert_price_versions(conn, versions=shipped_versions(), created_by="seed")
    return len(inserted)


async def list_current_prices(
    conn: asyncpg.Connection | asyncpg.Pool, at: datetime | None = None
) -> list[PriceVersion]:
    """The version in force for every model at `at` (default: now), by model."""
    rows = await conn.fetch(_SELECT_CURRENT, at)
    return _checked(rows)[0]


async def list_price_history(
    conn: asyncpg.Connection | asyncpg.Pool, *, models: Iterable[str]
) -> list[PriceVersion]:
    """Every version (past, current and scheduled) of the given model ids, oldest first."""
    rows = await conn.fetch(_SELECT_HISTORY, list(models))
    return _checked(rows)[0]
