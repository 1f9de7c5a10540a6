"""`meterline demo`: stack up, worker + API, a metered synthetic stream, balances checked."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        events: int = typer.Option(50_000, min=1, help="Synthetic usage events to publish."),
        accounts: int = typer.Option(200, min=1, help="Demo accounts (each gets 25 credits)."),
        port: int = typer.Option(8000, help="API port (another free one if taken)."),
        keep_running: bool = typer.Option(
            False,
            "--keep-running",
            help="Keep the worker and the API up after the demo (for the dashboard) until Ctrl-C.",
        ),
    ) -> None:
        """Run the whole pipeline once, show throughput and balances against the ledger, and
        print the dashboard's address with a key to open it."""
        from deploy import demo as demo_run
        from deploy.stack import StackError
        from meterline.commands._common import console, fail

        try:
            code = demo_run.run(
                events=events,
                accounts=accounts,
                port=port,
                say=console.log,
                keep_running=keep_running,
            )
        except (StackError, RuntimeError) as exc:
            fail(str(exc))
        raise typer.Exit(code)
