"""The `meterline` CLI: one sub-app or command per file in meterline/commands, no domain logic."""

from __future__ import annotations

import typer

from meterline.commands import (
    admin,
    api,
    bench,
    byok,
    demo,
    dev,
    migrate,
    pricing,
    produce,
    reconcile,
    worker,
)
from meterline.commands._common import console

app = typer.Typer(
    name="meterline",
    help="Usage metering and prepaid credits for LLM traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

dev.register(app)
demo.register(app)
migrate.register(app)
worker.register(app)
produce.register(app)
pricing.register(app)
api.register(app)
reconcile.register(app)
bench.register(app)
admin.register(app)
byok.register(app)


def main() -> None:
    """The `meterline` command: a setting with a value its rule refuses is named, exit 2."""
    from schemas.settings import InvalidSetting

    try:
        app(prog_name="meterline")
    except InvalidSetting as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None
