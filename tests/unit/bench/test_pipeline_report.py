"""`meterline bench pipeline --repeat`: the medians a target is judged on."""

from __future__ import annotations

from bench.pipeline import CpuPerEvent, Drain, PipelineFigures, medians, report


def _run(ref: float, one: float, two: float, p99: float) -> PipelineFigures:
    return PipelineFigures(
        events=1000,
        publish_s=1.0,
        reference_per_s=ref,
        reference_cpu=CpuPerEvent(10, 10),
        drains=[
            Drain(1, int(one), 1.0, {200: 100.0}, CpuPerEvent(60, 50)),
            Drain(2, int(two), 1.0, {200: 100.0}, CpuPerEvent(50, 50)),
        ],
        latency_rate=one / 2,
        latency_events=100,
        p50_ms=10,
        p99_ms=p99,
    )


def test_each_ratio_is_taken_within_its_run_then_the_median_of_those() -> None:
    # A box twice as fast in the second run: the rates' medians would mix runs; ratios do not.
    runs = [
        _run(10_000, 3_000, 4_500, 300),
        _run(20_000, 8_000, 9_000, 200),
        _run(10_000, 2_500, 5_000, 900),
    ]
    lines = medians(runs)
    assert lines[0] == "median of 3 runs"
    x1 = next(line for line in lines if line.startswith("worker x1"))
    assert "0.30x the reference (each run's ratio: 0.30, 0.40, 0.25)" in x1
    x2 = next(line for line in lines if line.startswith("worker x2"))
    assert "0.45x the reference" in x2
    assert "scaling     x2 / x1 = 1.50" in lines  # 1.5, 1.125, 2.0
    assert "latency     p99 300 ms" in lines


def test_one_run_reports_ratio_rss_cpu_and_scaling() -> None:
    lines = report(_run(10_000, 3_000, 4_500, 300))
    assert "worker x1   3,000 events/s = 0.30x the reference (3,000 events in 1.0s)" in lines
    assert (
        "            CPU per event: 60 µs client + 50 µs Postgres (5.5x the reference's)" in lines
    )
    assert "scaling     x2 / x1 = 1.50" in lines
