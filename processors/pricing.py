"""Pricing, pure: a usage event and the price version in force → its exact cost, rounded once.

Prices are credits per million tokens (per request, per unit). The arithmetic runs in one
module-level decimal context that traps ``Inexact``: every intermediate is exact or the call
fails loudly, and the only rounding is the final half-even step to the micro-credit.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from typing import Any, Protocol

from schemas.bounds import check_cost_micros
from schemas.errors import DomainError
from schemas.money import format_micros, from_micros, round_micros

__all__ = [
    "DEFAULT_BYOK_FEE_PCT",
    "LIST_PRICE",
    "Catalog",
    "CostBreakdown",
    "PriceVersion",
    "Terms",
    "Unpriced",
    "UsageLike",
    "bare_model",
    "plain",
    "price_event",
    "unpriced_unit",
]

# Exact arithmetic: 200 digits is far beyond any real cost, and Inexact/Rounded are traps, so
# an amount can never be silently rounded before the single final rounding.
_EXACT = Context(
    prec=200,
    rounding=ROUND_HALF_EVEN,
    Emin=MIN_EMIN,
    Emax=MAX_EMAX,
    traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow],
)
_mul = _EXACT.multiply
_add = _EXACT.add
_ZERO = Decimal(0)
_ONE = Decimal(1)
_MTOK_EXP = -6  # per million tokens → per token
_LOOKUP_MEMO_MAX = 4096
_new = object.__new__

DEFAULT_BYOK_FEE_PCT = Decimal(5)
"""The platform fee a byok event pays, in percent of what it would have cost (DESIGN.md)."""


def plain(value: Decimal) -> str:
    """A Decimal as a plain decimal string without exponent or trailing zeros ("0.000075")."""
    if not value:
        return "0"
    return format(value.normalize(_EXACT), "f")


def bare_model(model: str) -> str:
    """The model id without its "provider/" prefix ("openai/gpt-4o" → "gpt-4o")."""
    return model.split("/", 1)[1] if "/" in model else model


def _price(name: str, value: Any, *, nullable: bool = False) -> Decimal | None:
    if value is None:
        if nullable:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, float) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"{name} must be a Decimal (or decimal string), got {type(value).__name__}")
    dec = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    if not dec.is_finite() or dec < 0:
        raise ValueError(f"{name} must be a finite price >= 0, got {value!r}")
    return dec


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """A model's prices from effective_from on: credits per million tokens, request, unit."""

    id: int | None
    model: str
    provider: str | None
    effective_from: datetime
    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None
    output_per_mtok: Decimal
    per_request: Decimal = _ZERO
    units: Mapping[str, Decimal] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must not be empty")
        if self.effective_from.utcoffset() is None:
            raise ValueError(
                f"effective_from for {self.model} must be timezone-aware, got {self.effective_from}"
            )
        s = object.__setattr__
        s(self, "input_per_mtok", _price("input_per_mtok", self.input_per_mtok))
        s(
            self,
            "cached_input_per_mtok",
            _price("cached_input_per_mtok", self.cached_input_per_mtok, nullable=True),
        )
        s(
            self,
            "cache_write_per_mtok",
            _price("cache_write_per_mtok", self.cache_write_per_mtok, nullable=True),
        )
        s(self, "output_per_mtok", _price("output_per_mtok", self.output_per_mtok))
        s(self, "per_request", _price("per_request", self.per_request))
        units: dict[str, Decimal] = {}
        for name, price in self.units.items():
            p = _price(f"units[{name!r}]", price)
            assert p is not None
            units[name] = p
        s(self, "units", units)

    @property
    def cached_input_rate(self) -> Decimal:
        """The price per million cached input tokens (the input price when none is set)."""
        c = self.cached_input_per_mtok
        return self.input_per_mtok if c is None else c

    @property
    def cache_write_rate(self) -> Decimal:
        """The price per million cache-write tokens (the input price when none is set)."""
        c = self.cache_write_per_mtok
        return self.input_per_mtok if c is None else c

    def same_prices(self, other: PriceVersion) -> bool:
        """True when other charges exactly what this version charges (dates and ids aside)."""
        return (
            self.input_per_mtok == other.input_per_mtok
            and self.cached_input_per_mtok == other.cached_input_per_mtok
            and self.cache_write_per_mtok == other.cache_write_per_mtok
            and self.output_per_mtok == other.output_per_mtok
            and self.per_request == other.per_request
            and dict(self.units) == dict(other.units)
        )


@dataclass(frozen=True, slots=True)
class Terms:
    """An account's terms at the moment a charge is made: its tier's multiplier and the byok fee.

    Every usage row stores the terms it was charged with, so the charge can be reproduced
    exactly after the account's tier (or the fee setting) changes.
    """

    multiplier: Decimal = _ONE
    byok_fee_pct: Decimal = DEFAULT_BYOK_FEE_PCT


LIST_PRICE = Terms()
"""The default tier's terms: list price, the default byok fee."""


class Unpriced(DomainError):
    """No price: no version of the model at that time, or a unit the version does not price.

    `reason` says which: "no_version" or "unpriced_unit" (then `unit` names the unit).
    """

    code = "unpriced"
    status = 422

    def __init__(self, message: str, *, model: str, unit: str | None = None) -> None:
        super().__init__(message, model=model, **({"unit": unit} if unit else {}))
        self.model = model
        self.unit = unit
        self.reason = "unpriced_unit" if unit is not None else "no_version"

    @classmethod
    def no_version(cls, model: str, at: datetime | None = None) -> Unpriced:
        when = f" at {at.isoformat()}" if at is not None else ""
        return cls(
            f"model {model!r} has no price{when}; add a price version "
            f"(PUT /api/v1/admin/pricing/models/{model} or `meterline pricing import`) "
            "and re-rate the event",
            model=model,
        )

    @classmethod
    def no_unit_price(cls, model: str, unit: str, version: PriceVersion) -> Unpriced:
        known = ", ".join(sorted(version.units)) or "none"
        return cls(
            f"unit {unit!r} has no price for model {model!r} (version from "
            f"{version.effective_from.isoformat()} prices units: {known})",
            model=model,
            unit=unit,
        )


class UsageLike(Protocol):
    """The token attributes of a UsageEvent that pricing reads."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def units(self) -> Mapping[str, Decimal]: ...
    @property
    def byok(self) -> bool: ...


@dataclass(frozen=True)
class CostBreakdown:
    """An event's cost: exact per-bucket credits, the factors applied, and the one rounding."""

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    requests: Decimal
    units: dict[str, Decimal]
    subtotal: Decimal
    multiplier: Decimal
    byok: bool
    byok_fee_pct: Decimal
    total_exact: Decimal
    cost_micros: int
    price_version_id: int | None

    @property
    def cost(self) -> Decimal:
        """The rounded cost in credits (6 places)."""
        return from_micros(self.cost_micros)

    def as_wire(self) -> dict[str, Any]:
        """The JSON form: the cost with 6 places, every other amount as a plain decimal string."""
        return {
            "cost": format_micros(self.cost_micros),
            "breakdown": {
                "input": plain(self.input),
                "cached_input": plain(self.cached_input),
                "cache_write": plain(self.cache_write),
                "output": plain(self.output),
                "requests": plain(self.requests),
                "units": {k: plain(v) for k, v in self.units.items()},
            },
            "subtotal": plain(self.subtotal),
            "multiplier": plain(self.multiplier),
            "byok": self.byok,
            "byok_fee_pct": plain(self.byok_fee_pct),
            "total_exact": plain(self.total_exact),
            "price_version_id": self.price_version_id,
        }


def _tokens(count: int, rate: Decimal) -> Decimal:
    # tokens × (credits per million tokens) / 10**6, exact.
    if not count:
        return _ZERO
    return _mul(count, rate).scaleb(_MTOK_EXP, _EXACT)


def unpriced_unit(event: UsageLike, version: PriceVersion) -> Unpriced | None:
    """Why the version cannot price the event (a unit used that it has no price for), or None.

    The one rule for it: price_event raises what this returns, and the batch debit asks it
    before it decides which copy of an idempotency key is debited (an unpriced copy holds none).
    """
    if event.units:
        prices = version.units
        for name, count in event.units.items():
            if count and name not in prices:  # a unit not used costs nothing, priced or not
                return Unpriced.no_unit_price(version.model, name, version)
    return None


def price_event(
    event: UsageLike, version: PriceVersion, terms: Terms = LIST_PRICE
) -> CostBreakdown:
    """Price one event: exact buckets × multiplier (× the fee if byok), rounded once, half-even.

    The one rating rule: the batch debit, reconcile's expectation and the API's calculate-cost
    all call it. Raises Unpriced (a typed reason) when the version does not price a unit used.
    """
    multiplier, byok_fee_pct = terms.multiplier, terms.byok_fee_pct
    inp = version.input_per_mtok
    c_in = _tokens(event.cached_input_tokens, version.cached_input_rate)
    c_wr = _tokens(event.cache_write_tokens, version.cache_write_rate)
    b_in = _tokens(event.input_tokens, inp)
    # Reasoning tokens are part of output_tokens: priced once, at the output rate.
    b_out = _tokens(event.output_tokens, version.output_per_mtok)
    req = event.requests
    b_req = _mul(req, version.per_request) if req else _ZERO

    subtotal = _add(_add(_add(b_in, c_in), _add(c_wr, b_out)), b_req)
    b_units: dict[str, Decimal] = {}
    if event.units:
        unpriced = unpriced_unit(event, version)
        if unpriced is not None:
            raise unpriced
        prices = version.units
        for name, count in event.units.items():
            if not count:
                continue
            amount = _mul(count, prices[name])
            b_units[name] = amount
            subtotal = _add(subtotal, amount)

    total = subtotal if multiplier == _ONE else _mul(subtotal, multiplier)
    byok = bool(event.byok)
    if byok:
        total = _mul(total, byok_fee_pct).scaleb(-2, _EXACT)
    if total < 0:
        raise ValueError(f"cost of {total} credits is negative: check multiplier {multiplier}")
    micros = round_micros(total)
    # DESIGN's bound on a priced cost (10^12 credits): an event beyond it is refused wherever it
    # is priced (CostOutOfBounds; the worker dead-letters it as invalid_event).
    check_cost_micros(micros)
    # Hot path: a frozen dataclass's __init__ pays one object.__setattr__ per field (~1 µs of
    # ~4.5 µs per event); filling the instance dict directly builds the same, equal object.
    out = _new(CostBreakdown)
    out.__dict__.update(
        input=b_in,
        cached_input=c_in,
        cache_write=c_wr,
        output=b_out,
        requests=b_req,
        units=b_units,
        subtotal=subtotal,
        multiplier=multiplier,
        byok=byok,
        byok_fee_pct=byok_fee_pct,
        total_exact=total,
        cost_micros=micros,
        price_version_id=version.id,
    )
    return out


class Catalog:
    """Every price version by model, answering which version was in force at a given time."""

    __slots__ = ("_by_model", "_starts", "_lower", "_bare", "_memo")

    def __init__(self, versions: Iterable[PriceVersion] = ()) -> None:
        grouped: dict[str, list[PriceVersion]] = {}
        for v in versions:
            grouped.setdefault(v.model, []).append(v)
        self._by_model: dict[str, list[PriceVersion]] = {}
        self._starts: dict[str, list[datetime]] = {}
        for model, vs in grouped.items():
            vs.sort(key=lambda v: v.effective_from)
            for a, b in zip(vs, vs[1:], strict=False):
                if a.effective_from == b.effective_from:
                    raise ValueError(
                        f"two price versions of {model!r} start at {a.effective_from.isoformat()}"
                    )
            self._by_model[model] = vs
            self._starts[model] = [v.effective_from for v in vs]
        # Aliases resolve only when unambiguous; an ambiguous alias maps to None.
        self._lower: dict[str, str | None] = {}
        self._bare: dict[str, str | None] = {}
        for model in self._by_model:
            low = model.lower()
            self._lower[low] = None if low in self._lower else model
            bare = bare_model(low)
            self._bare[bare] = None if bare in self._bare else model
        self._memo: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self._by_model)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.resolve(model) is not None

    def versions(self) -> Iterator[PriceVersion]:
        """Every version, by model then effective_from."""
        for model in sorted(self._by_model):
            yield from self._by_model[model]

    def models(self) -> list[str]:
        """The catalog's model ids, sorted."""
        return sorted(self._by_model)

    def history(self, model: str) -> list[PriceVersion]:
        """The versions of a model (resolved by alias), oldest first; [] when unknown."""
        key = self.resolve(model)
        return list(self._by_model[key]) if key is not None else []

    def resolve(self, model: str) -> str | None:
        """The catalog id a name refers to: exact, case-insensitive, then without "provider/"."""
        if model in self._by_model:
            return model
        memo = self._memo
        if model in memo:
            return memo[model]
        low = model.lower()
        key = self._lower.get(low)
        if key is None:
            if "/" in low:
                # "openai/gpt-4o-mini" finds a catalog entry named plain "gpt-4o-mini", but never
                # one under a different provider prefix ("azure/gpt-4o" is not "openai/gpt-4o").
                bare = bare_model(low)
                key = self._lower.get(bare)
                if key is not None and "/" in key:
                    key = None
            else:
                key = self._bare.get(low)
        if len(memo) < _LOOKUP_MEMO_MAX:
            memo[model] = key
        return key

    def version_at(self, model: str, at: datetime) -> PriceVersion | None:
        """The version of model with the greatest effective_from <= at, or None."""
        if at.utcoffset() is None:
            raise ValueError(f"price lookup time must be timezone-aware, got {at}")
        key = model if model in self._by_model else self.resolve(model)
        if key is None:
            return None
        i = bisect_right(self._starts[key], at)
        return self._by_model[key][i - 1] if i else None

    def require(self, model: str, at: datetime) -> PriceVersion:
        """version_at, raising Unpriced when there is none."""
        v = self.version_at(model, at)
        if v is None:
            raise Unpriced.no_version(model, at)
        return v

    def provider_for(self, model: str) -> str | None:
        """The model's provider: from its newest version, else the id's "provider/" prefix."""
        key = self.resolve(model)
        if key is not None:
            for v in reversed(self._by_model[key]):
                if v.provider:
                    return v.provider
            model = key
        return model.split("/", 1)[0] if "/" in model else None
