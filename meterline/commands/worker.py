"""`meterline worker`: the Faust metering worker (issue #3)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        loglevel: str = typer.Option("info", help="Log level: debug, info, warning."),
    ) -> None:
        """Run the Faust metering worker: usage.events → price → debit (start more to scale)."""
        import faust

        from meterline.commands._common import addresses
        from processors.settings import WorkerSettings
        from schemas.settings import get_settings

        # Before the app is imported: it connects to what the settings name.
        addresses(get_settings(WorkerSettings), kafka=True, database=True)
        from processors.app import app as faust_app

        faust.Worker(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()
