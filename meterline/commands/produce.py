"""`meterline produce`: publish usage events from a file, stdin or a synthetic generator (#3)."""

from __future__ import annotations

import typer

from meterline.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("produce")
    def produce() -> None:
        """Publish usage events from a file, stdin or a generator (lands with issue #3)."""
        not_yet(3, "meterline produce")
