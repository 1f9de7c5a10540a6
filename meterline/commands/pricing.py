"""`meterline pricing ...`: the versioned price catalog (issue #3)."""

from __future__ import annotations

import typer

from meterline.commands._common import not_yet

pricing_app = typer.Typer(help="The versioned price catalog.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(pricing_app, name="pricing")


@pricing_app.command("import")
def import_litellm() -> None:
    """Import LiteLLM's model_prices_and_context_window.json (lands with issue #3)."""
    not_yet(3, "meterline pricing import")
