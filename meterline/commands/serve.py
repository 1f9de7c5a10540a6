"""`meterline api`: serve the HTTP API (issue #4)."""

from __future__ import annotations

import typer

from meterline.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("api")
    def api(host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serve the HTTP API (lands with issue #4)."""
        not_yet(4, "meterline api")
