"""`meterline admin ...`: create API keys, allocate credit (issue #4)."""

from __future__ import annotations

import typer

from meterline.commands._common import not_yet

admin_app = typer.Typer(help="Admin helpers: API keys, allocations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


@admin_app.command("create-key")
def create_key() -> None:
    """Create an API key (lands with issue #4)."""
    not_yet(4, "meterline admin create-key")
