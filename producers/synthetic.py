"""Synthetic usage for load and demos: N realistic events over K accounts, the same for a seed.

The same (seed, now) gives the same events, event_ids included, so publishing twice with one
seed republishes the same events (a duplicate test); use another seed for fresh traffic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from schemas.event import UsageEvent

DEFAULT_MODELS: tuple[str, ...] = (
    "openai/gpt-4o-mini",
    "openai/gpt-4o",
    "anthropic/claude-sonnet-4-5",
    "google/gemini-2.5-flash",
    "meta-llama/llama-3.3-70b-instruct",
)
# How often each model family is used; small models dominate real traffic.
_MODEL_WEIGHTS = {
    "openai/gpt-4o-mini": 5.0,
    "openai/gpt-4o": 2.0,
    "anthropic/claude-sonnet-4-5": 2.0,
    "google/gemini-2.5-flash": 3.0,
    "meta-llama/llama-3.3-70b-instruct": 1.0,
}
# Models that think before answering, and those whose prompt caches are written explicitly.
_REASONING = ("google/gemini-2.5-flash", "anthropic/claude-sonnet-4-5")
_CACHE_WRITES = ("anthropic/",)


DEFAULT_WINDOW = timedelta(minutes=5)  # occurred_at spread over this much time before now


def account_id(i: int) -> str:
    """The synthetic account number i: acct-00042."""
    return f"acct-{i:05d}"


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(rng.lognormvariate(math.log(median), sigma))))


def synthetic_events(
    n: int,
    accounts: int,
    *,
    seed: int = 0,
    now: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
    models: Sequence[str] = DEFAULT_MODELS,
    byok_fraction: float = 0.0,
    source: str = "synthetic",
) -> Iterator[UsageEvent]:
    """n events over `accounts` accounts, occurred_at spread over the `window` before now."""
    if n < 0 or accounts < 1:
        raise ValueError("need n >= 0 events and accounts >= 1")
    if not 0.0 <= byok_fraction <= 1.0:
        raise ValueError("byok_fraction must be within [0, 1]")
    rng = random.Random(seed)
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - window
    # A few accounts spend most (Zipf-like), as in real traffic.
    # Cumulative weights once: rng.choices then bisects instead of summing K weights per event
    # (the same draws as passing weights, at O(log K)).
    account_cum = list(accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(accounts)))
    model_cum = list(accumulate(_MODEL_WEIGHTS.get(m, 1.0) for m in models))
    population = range(accounts)
    for i in range(n):
        model = rng.choices(models, cum_weights=model_cum)[0]
        prompt = _lognormal(rng, 900, 1.2, 1, 120_000)
        cached = 0
        if rng.random() < 0.35 and prompt >= 1024:
            cached = rng.randrange(1024, prompt + 1)
        cache_write = 0
        if model.startswith(_CACHE_WRITES) and rng.random() < 0.15:
            cache_write = rng.randrange(0, prompt - cached + 1)
        output = _lognormal(rng, 250, 1.0, 1, 16_000)
        reasoning = 0
        if model in _REASONING and rng.random() < 0.3:
            reasoning = rng.randrange(0, output + 1)
        offset = window * ((i + rng.random()) / max(n, 1))
        yield UsageEvent(
            event_id=f"syn-{seed}-{i:09d}",
            source=source,
            account_id=account_id(rng.choices(population, cum_weights=account_cum)[0]),
            occurred_at=start + offset,
            model=model,
            input_tokens=prompt - cached - cache_write,
            cached_input_tokens=cached,
            cache_write_tokens=cache_write,
            output_tokens=output,
            reasoning_tokens=reasoning,
            byok=rng.random() < byok_fraction,
            metadata={"request_id": f"req-{seed}-{i}"},
        )
