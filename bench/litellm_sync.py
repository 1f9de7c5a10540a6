"""What metering adds to a sync LiteLLM call (``litellm.completion``): the time the callback's
``log_success_event`` takes, in LiteLLM's logging thread, to publish the call's usage event
until Kafka acknowledges it (or the API accepts it, with ``--api-url`` and no ``--kafka``).

    python -m bench.litellm_sync --kafka 127.0.0.1:19092 --calls 40 --runs 5

Calls are mocked (``mock_response``: no provider, no network) and sequential; each run makes a
fresh callback, and the figure printed is the median over runs of each run's median per-call
time (the first call of a run included in its run). The usage goes to a topic of its own
(``--topic``, created when missing), not to usage.events, so no worker debits it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import


def _timed_callback(durations: list[float], done: threading.Semaphore, **settings: Any) -> Any:
    from producers.integrations.litellm import MeterlineCallback

    class Timed(MeterlineCallback):
        def log_success_event(self, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            try:
                super().log_success_event(*args, **kwargs)
            finally:
                durations.append(time.perf_counter() - started)
                done.release()

    return Timed(**settings)


def run(calls: int, settings: dict[str, Any]) -> list[float]:
    """Per-call seconds of `calls` sync completions metered by a fresh callback."""
    import litellm

    durations: list[float] = []
    done = threading.Semaphore(0)
    callback = _timed_callback(durations, done, **settings)
    litellm.logging_callback_manager._reset_all_callbacks()
    litellm.callbacks = [callback]
    try:
        for _ in range(calls):
            litellm.completion(
                model="openai/meterline-bench",
                messages=[{"role": "user", "content": "What is metering?"}],
                mock_response="Metering counts.",
                user="bench-account",
            )
            done.acquire(timeout=60)  # the callback runs in LiteLLM's logging thread
    finally:
        asyncio.run(callback.aclose())
        litellm.callbacks = []
    return durations


def main() -> None:
    """Print each run's median per-call time and the median over runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka", default="", help="Kafka bootstrap (else --api-url)")
    parser.add_argument("--api-url", default="", help="meterline API, for HTTP ingest")
    parser.add_argument("--api-key", default="", help="a key allowed to publish the usage")
    parser.add_argument("--topic", default="meterline.bench.litellm-sync")
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.kafka:
        from processors.topic_admin import ensure_topics

        asyncio.run(ensure_topics(args.kafka, {args.topic: 1}))
    medians: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "kafka_bootstrap": args.kafka,
            "api_url": args.api_url,
            "api_key": args.api_key,
            "topic_usage_events": args.topic,
            "spool_path": Path(tmp) / "spool.jsonl",
        }
        for n in range(args.runs):
            durations = run(args.calls, settings)
            medians.append(statistics.median(durations))
            print(
                f"run {n + 1}: {len(durations)} calls, median {medians[-1] * 1000:.2f} ms, "
                f"max {max(durations) * 1000:.2f} ms"
            )
    print(
        f"sync call metering: median of {args.runs} run medians = "
        f"{statistics.median(medians) * 1000:.2f} ms per call"
    )


if __name__ == "__main__":
    main()
