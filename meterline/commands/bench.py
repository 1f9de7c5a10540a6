"""`meterline bench`: benchmark harnesses that print their figures (issues #3, #4, #5)."""

from __future__ import annotations

import typer

from meterline.commands._common import not_yet

bench_app = typer.Typer(help="Benchmarks (print figures; never gate CI).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("pipeline")
def pipeline() -> None:
    """End-to-end metering throughput and latency (lands with issue #3)."""
    not_yet(3, "meterline bench pipeline")
