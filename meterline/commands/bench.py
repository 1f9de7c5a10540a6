"""`meterline bench`: benchmark harnesses that print their figures (issues #3, #4, #5)."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks (print figures; never gate CI).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("pipeline")
def pipeline(
    events: int = typer.Option(500_000, min=1, help="Events published once and drained."),
    accounts: int = typer.Option(10_000, min=1, help="Prepaid synthetic accounts."),
    workers: str = typer.Option(
        "1,2", help="Worker counts to drain with, in turn (comma-separated)."
    ),
    latency_seconds: float = typer.Option(20, min=1, help="Seconds of the latency phase."),
    baseline_events: int = typer.Option(
        0, min=0, help="Events for the one-transaction-per-event baseline (0: skip)."
    ),
    repeat: int = typer.Option(
        1, min=1, help="Whole runs, one after another; with more than one, their medians too."
    ),
) -> None:
    """The worker's drain rate beside a lean reference pipeline, 1 vs 2 workers, latency, RSS."""
    import asyncio
    import sys
    from pathlib import Path

    from meterline.commands._common import console, out

    try:
        counts = [int(w) for w in workers.split(",") if w.strip()]
    except ValueError:
        raise typer.BadParameter(
            "a comma-separated list of integers", param_hint="--workers"
        ) from None
    if not counts or min(counts) < 1:
        raise typer.BadParameter("at least one count, each >= 1", param_hint="--workers")
    # bench/ sits beside the packages but is not one of pyproject's installed packages.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.pipeline import PipelineFigures, medians, report, run

    runs: list[PipelineFigures] = []
    for n in range(repeat):
        f = asyncio.run(
            run(
                events=events,
                accounts=accounts,
                workers=counts,
                latency_seconds=latency_seconds,
                baseline_events=baseline_events,
                say=console.log,
            )
        )
        runs.append(f)
        if repeat > 1:
            out.print(f"=== run {n + 1} of {repeat} (load average {_load()})")
        for line in report(f):
            out.print(line)
    if repeat > 1:
        out.print("")
        for line in medians(runs):
            out.print(line)


def _load() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@bench_app.command("writes")
def writes(
    batch: int = typer.Option(2000, min=1, max=100_000, help="Events per staged batch."),
    accounts: int = typer.Option(10_000, min=1, max=999_999, help="Accounts they spread over."),
    rounds: int = typer.Option(15, min=1, help="Batches each side; medians are printed."),
) -> None:
    """Postgres time per event of each write the ledger keeps, beside the reference's writes."""
    import asyncio
    import sys
    from pathlib import Path

    from meterline.commands._common import addresses, console, out
    from processors.settings import WorkerSettings
    from schemas.settings import get_settings

    # bench/ sits beside the packages but is not one of pyproject's installed packages.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.writes import report, run

    dsn = addresses(get_settings(WorkerSettings), database=True).database_url
    figures = asyncio.run(run(dsn, batch=batch, accounts=accounts, rounds=rounds, say=console.log))
    for line in report(figures):
        out.print(line, highlight=False)


@bench_app.command("api")
def api(
    duration: float = typer.Option(10.0, help="Seconds per load phase"),
    clients: int = typer.Option(50, help="Concurrent connections (wrk -c, or httpx clients)"),
    accounts: int = typer.Option(1000, help="Seeded accounts"),
    ledger_rows: int = typer.Option(10_000_000, help="Ledger rows of the paged account"),
    page_requests: int = typer.Option(300, help="Requests per transactions-page shape"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
    database: str = typer.Option("meterline_bench", help="The bench's own database"),
    load: str = typer.Option(
        "auto",
        help="Load generator: wrk (C, out of process), httpx (in this process), or auto "
        "(wrk when installed, else httpx with a note)",
    ),
    threads: int = typer.Option(2, min=1, help="wrk threads"),
    rate: float = typer.Option(
        0,
        min=0,
        help="Requests/s of the fixed-rate phases after the closed loops (wrk); "
        "0: half the minimal FastAPI reference's closed-loop rate",
    ),
    repeat: int = typer.Option(3, min=1, help="Runs of each load phase (medians printed)"),
    ledger_months: int = typer.Option(24, min=1, help="Months the seeded ledger spans"),
    ledger_accounts: int = typer.Option(10_000, min=1, help="Accounts of the seeded ledger"),
    only_pages: bool = typer.Option(
        False, "--only-pages", help="Only seed the ledger and read its pages (no hot routes)"
    ),
    keep_database: bool = typer.Option(
        False, "--keep-database", help="Keep the bench database (and its ledger) for next time"
    ),
    routes: str = typer.Option(
        "", help="Comma-separated hot routes to measure: balance, authorize, reserve (default all)"
    ),
    extras: bool = typer.Option(
        True, help="After the hot routes: reserve + release pairs (httpx) and transactions pages"
    ),
    server_cpus: str = typer.Option(
        "", help="taskset -c list for both servers (meterline and the reference), e.g. 0"
    ),
    load_cpus: str = typer.Option("", help="taskset -c list for wrk, e.g. 1"),
) -> None:
    """GET balance / POST authorize under load beside a minimal FastAPI reference, then
    transactions pages on a large month-partitioned ledger (0 --ledger-rows: none); the bench
    database is dropped at the end unless --keep-database."""
    import asyncio
    import sys
    from pathlib import Path

    from meterline.commands._common import console, out

    # bench/ sits beside the packages but is not one of pyproject's installed packages.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.api import ROUTE_KEYS, ApiBenchConfig, run_api_bench, summary

    if load not in ("auto", "wrk", "httpx"):
        raise typer.BadParameter("--load must be auto, wrk or httpx", param_hint="--load")
    chosen = tuple(r.strip() for r in routes.split(",") if r.strip())
    if any(r not in ROUTE_KEYS for r in chosen):
        raise typer.BadParameter(f"each one of {', '.join(ROUTE_KEYS)}", param_hint="--routes")
    cfg = ApiBenchConfig(
        duration_s=duration,
        clients=clients,
        accounts=max(accounts, clients),
        ledger_rows=ledger_rows,
        page_requests=page_requests,
        workers=workers,
        database=database,
        load=load,  # type: ignore[arg-type]
        threads=threads,
        rate=rate,
        repeat=repeat,
        ledger_months=ledger_months,
        ledger_accounts=ledger_accounts,
        only_pages=only_pages,
        keep_database=keep_database,
        routes=chosen,
        extras=extras,
        server_cpus=server_cpus,
        load_cpus=load_cpus,
    )
    report = asyncio.run(run_api_bench(cfg, lambda m: console.print(m, highlight=False)))
    out.print(summary(report), highlight=False)


@bench_app.command("reconcile")
def reconcile(
    events: int = typer.Option(1_000_000, "--events", min=1, help="Synthetic events to reconcile"),
    accounts: int = typer.Option(1000, "--accounts", min=1, help="Synthetic accounts"),
    database: str = typer.Option("meterline_bench_reconcile", help="The bench's own database"),
    keep_topic: bool = typer.Option(False, "--keep-topic", help="Keep the bench topic"),
) -> None:
    """Publish and debit N synthetic events, then time `reconcile` over them (issue #5)."""
    import asyncio
    import sys
    from pathlib import Path

    from meterline.commands._common import addresses, console, out

    # bench/ sits beside the packages but is not one of pyproject's installed packages.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.reconcile import run_reconcile_bench
    from processors.settings import WorkerSettings
    from schemas.settings import get_settings

    result = asyncio.run(
        run_reconcile_bench(
            addresses(get_settings(WorkerSettings), kafka=True, database=True),
            events=events,
            accounts=accounts,
            database=database,
            keep_topic=keep_topic,
            say=lambda m: console.print(m, highlight=False),
        )
    )
    for line in result.lines():
        out.print(line, highlight=False)


@bench_app.command("chaos")
def chaos(
    minutes: float = typer.Option(10.0, min=0.1, help="Minutes of load and faults"),
    rate: float = typer.Option(300.0, min=1, help="Usage events/s (Kafka and HTTP together)"),
    http_share: float = typer.Option(
        0.3, min=0, max=1, help="Share of the events sent through HTTP ingest"
    ),
    accounts: int = typer.Option(200, min=1, help="Prepaid accounts"),
    deduct_rate: float = typer.Option(5.0, min=0, help="API deductions/s"),
    workers: int = typer.Option(2, min=1, help="`meterline worker` processes"),
    fault_min: float = typer.Option(15.0, min=1, help="Shortest pause between faults (s)"),
    fault_max: float = typer.Option(45.0, min=1, help="Longest pause between faults (s)"),
    database: str = typer.Option("meterline_bench_chaos", help="The harness's own database"),
) -> None:
    """Load plus random faults (worker SIGKILL/SIGTERM, Postgres and broker restarts, poison),
    then reconcile: PASS when nothing is missing, extra or mismatched (issue #8).

    It restarts the Kafka and Postgres of the local stack in METERLINE_HOME: never run it
    against a stack that others use.
    """
    import asyncio
    import sys
    from pathlib import Path

    from meterline.commands._common import console, fail, out

    if fault_max < fault_min:
        fail("--fault-max must be at least --fault-min")
    # bench/ sits beside the packages but is not one of pyproject's installed packages.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.chaos import ChaosConfig, StackControl, run_chaos
    from deploy import stack

    def quiet(_message: str) -> None:
        pass

    control = StackControl(
        restart_postgres=lambda: stack.restart_postgres(quiet),
        restart_kafka=lambda down_s: stack.restart_kafka(quiet, down_s=down_s),
    )

    cfg = ChaosConfig(
        minutes=minutes,
        rate=rate,
        http_share=http_share,
        accounts=accounts,
        deduct_rate=deduct_rate,
        workers=workers,
        fault_every=(fault_min, fault_max),
        database=database,
    )
    try:
        report = asyncio.run(run_chaos(cfg, control, console))
    except RuntimeError as exc:
        fail(str(exc))
    for line in report.lines():
        out.print(line, highlight=False, markup=False)
    if not report.passed():
        raise typer.Exit(1)
