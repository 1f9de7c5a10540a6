"""`meterline replay` and `reconcile` (issue #5)."""

from __future__ import annotations

import typer

from meterline.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay() -> None:
        """Re-read usage topics through the ledger (lands with issue #5)."""
        not_yet(5, "meterline replay")

    @app.command("reconcile")
    def reconcile() -> None:
        """Compare the ledger with the stream (lands with issue #5)."""
        not_yet(5, "meterline reconcile")
