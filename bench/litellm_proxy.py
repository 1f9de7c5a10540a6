"""What meterline adds to a proxied call: p50/p99 of the pre-call hold, through a LiteLLM proxy.

Run against a proxy started as in docs/litellm.md (the callback in its config)::

    python -m bench.litellm_proxy --url http://127.0.0.1:4000 --key "$LITELLM_MASTER_KEY" \\
        --account acme --calls 500 [--baseline-url http://127.0.0.1:4001]

Each call's hold time is the proxy's own measure (the `x-meterline-hold-ms` header: pricing the
worst case and reserving it, from inside the pre-call hook); the end-to-end time is the
client's. With ``--baseline-url`` (the same config without the callback) the end-to-end figures
of both are printed, and their difference is the whole added latency. Calls are sequential, so
the figures are latencies, not throughput. Publishing the usage happens after the answer is
sent and adds nothing to it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run(
    url: str, key: str, account: str, calls: int, model: str
) -> tuple[list[float], list[float]]:
    """(hold ms, end-to-end ms) of `calls` sequential chat completions."""
    holds: list[float] = []
    totals: list[float] = []
    body = {
        "model": model,
        "user": account,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "What is metering?"}],
    }
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        for i in range(calls + 10):
            started = time.perf_counter()
            answer = client.post("/v1/chat/completions", json=body)
            elapsed = (time.perf_counter() - started) * 1000
            answer.raise_for_status()
            if i < 10:
                continue  # warm-up: connections, caches
            totals.append(elapsed)
            if "x-meterline-hold-ms" in answer.headers:
                holds.append(float(answer.headers["x-meterline-hold-ms"]))
    return holds, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--account", default="acme")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--model", default="demo-chat")
    parser.add_argument("--baseline-url", help="the same proxy without the callback")
    args = parser.parse_args()
    holds, totals = run(args.url, args.key, args.account, args.calls, args.model)
    if holds:
        print(
            f"pre-call hold   p50 {_pct(holds, 0.5):7.2f} ms  p99 {_pct(holds, 0.99):7.2f} ms  "
            f"mean {statistics.fmean(holds):7.2f} ms  ({len(holds)} calls)"
        )
    print(f"metered call    p50 {_pct(totals, 0.5):7.2f} ms  p99 {_pct(totals, 0.99):7.2f} ms")
    if args.baseline_url:
        _, base = run(args.baseline_url, args.key, args.account, args.calls, args.model)
        print(f"unmetered call  p50 {_pct(base, 0.5):7.2f} ms  p99 {_pct(base, 0.99):7.2f} ms")


if __name__ == "__main__":
    main()
