"""`meterline migrate up|down|status`: the SQL schema (schemas/migrations)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from meterline.commands._common import addresses, console, fail, out

migrate_app = typer.Typer(
    help="Apply, roll back and list the SQL migrations.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(migrate_app, name="migrate")


def _dsn() -> str:
    from schemas.settings import CommonSettings, get_settings

    return addresses(get_settings(CommonSettings), database=True).database_url


@migrate_app.command("up")
def up(
    backup: bool = typer.Option(False, help="pg_dump the database before applying."),
    backup_dir: Path = typer.Option(Path("backups"), help="Where --backup writes the dump."),
    target: int | None = typer.Option(None, help="Stop at this version."),
) -> None:
    """Apply pending migrations, verifying their tables and indexes."""
    import asyncpg

    from schemas import migrate

    dsn = _dsn()
    if backup:
        try:
            console.log(f"backup written to {migrate.backup(dsn, backup_dir)}")
        except (OSError, RuntimeError) as exc:
            fail(f"backup before migrating: {exc}; nothing was applied")

    async def run() -> list[migrate.Migration]:
        conn = await asyncpg.connect(dsn)
        try:
            return await migrate.up(conn, target=target)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, RuntimeError) as exc:
        fail(f"migrate up: {exc}")
    for m in applied:
        out.print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        out.print("nothing to apply: the schema is current")


@migrate_app.command("down")
def down(steps: int = typer.Option(1, min=1, help="How many migrations to roll back.")) -> None:
    """Roll back the newest applied migrations."""
    import asyncpg

    from schemas import migrate

    async def run() -> list[migrate.Migration]:
        conn = await asyncpg.connect(_dsn())
        try:
            return await migrate.down(conn, steps=steps)
        finally:
            await conn.close()

    try:
        rolled = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, RuntimeError) as exc:
        fail(f"migrate down: {exc}")
    for m in rolled:
        out.print(f"rolled back {m.version:04d}_{m.name}")


@migrate_app.command("status")
def status() -> None:
    """List applied and pending migrations."""
    import asyncpg

    from schemas import migrate

    async def run() -> list[tuple[migrate.Migration, object]]:
        conn = await asyncpg.connect(_dsn())
        try:
            return list(await migrate.status(conn))
        finally:
            await conn.close()

    try:
        rows = asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"migrate status: {exc}")
    for m, when in rows:
        out.print(f"{m.version:04d}_{m.name:<30} {'applied ' + str(when) if when else 'pending'}")
