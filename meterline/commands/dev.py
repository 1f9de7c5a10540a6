"""`meterline dev up|down|status`: the local Kafka + PostgreSQL stack (see deploy/stack.py)."""

from __future__ import annotations

import time

import typer
from rich.text import Text

from meterline.commands._common import console, fail, out

dev = typer.Typer(
    help="The local stack: a real Kafka broker and PostgreSQL, no Docker needed.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(dev, name="dev")


@dev.command("up")
def up() -> None:
    """Start Kafka (KRaft) and PostgreSQL, create the topics, apply migrations."""
    from deploy import stack

    started = time.monotonic()
    try:
        with console.status("starting the stack") as spinner:

            def progress(msg: str) -> None:
                console.log(msg)
                spinner.update(msg)

            st = stack.up(progress)
    except stack.StackError as exc:
        fail(str(exc))
    console.log(f"stack up in {time.monotonic() - started:.1f}s")
    _print_status(st)


@dev.command("down")
def down(
    purge: bool = typer.Option(False, help="Also delete the Kafka and PostgreSQL data."),
) -> None:
    """Stop Kafka and PostgreSQL; leaves no process of ours behind."""
    from deploy import stack

    try:
        stack.down(console.log, purge=purge)
    except stack.StackError as exc:
        fail(str(exc))


@dev.command("status")
def status() -> None:
    """Show what runs and where (Kafka bootstrap servers, the Postgres URI)."""
    from deploy import stack

    st = stack.status()
    _print_status(st)
    if not (st.kafka_running and st.postgres_running):
        raise typer.Exit(3)


def _print_status(st: object) -> None:
    from deploy.stack import StackStatus

    assert isinstance(st, StackStatus)
    k = ("running", "green") if st.kafka_running else ("stopped", "red")
    p = ("running", "green") if st.postgres_running else ("stopped", "red")
    pid = f"  pid={st.kafka_pid}" if st.kafka_pid else ""
    out.print(
        Text.assemble("kafka     ", k, f"  bootstrap={st.kafka_bootstrap}{pid}"), soft_wrap=True
    )
    out.print(Text.assemble("postgres  ", p, f"  uri={st.database_url}"), soft_wrap=True)
