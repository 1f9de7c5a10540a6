"""`meterline api`: serve the HTTP API with uvicorn (the app factory is api.main:create_app)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("api")
    def api(
        host: str = typer.Option("127.0.0.1", help="Interface to bind"),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
        workers: int = typer.Option(1, min=1, help="Worker processes"),
        log_level: str = typer.Option("info", help="uvicorn log level"),
        access_log: bool = typer.Option(True, help="Log every request"),
        server_header: bool = typer.Option(False, help="Send 'Server: uvicorn'"),
        loop: str = typer.Option(
            "auto", help="Event loop: auto (uvloop when installed), asyncio or uvloop"
        ),
        http: str = typer.Option(
            "auto", help="HTTP parser: auto (httptools when installed), h11 or httptools"
        ),
    ) -> None:
        """Serve the HTTP API (OpenAPI at /docs); settings from METERLINE_* variables."""
        import uvicorn

        from api.settings import ApiSettings
        from meterline.commands._common import addresses, fail
        from schemas.settings import get_settings

        if not host.strip():
            # uvicorn would bind every interface: an empty value is a mistake, not "all".
            fail("--host must name an interface, e.g. 127.0.0.1 or 0.0.0.0 for all", code=2)

        addresses(get_settings(ApiSettings), kafka=True, database=True)
        uvicorn.run(
            "api.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            server_header=server_header,
            loop=loop,
            http=http,
        )
