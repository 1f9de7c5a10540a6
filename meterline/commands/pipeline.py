"""`meterline worker`: the Faust metering worker (issue #3)."""

from __future__ import annotations

import typer

from meterline.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker() -> None:
        """Run the Faust metering worker (lands with issue #3)."""
        not_yet(3, "meterline worker")
