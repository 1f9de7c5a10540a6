"""`meterline pricing import|seed|list`: the versioned price catalog."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from meterline.commands._common import addresses, bounded_time, console, fail, out, tagged

if TYPE_CHECKING:
    from decimal import Decimal

    import asyncpg

    from processors.pricing import PriceVersion

pricing_app = typer.Typer(help="The versioned price catalog.", no_args_is_help=True)

T = TypeVar("T")
_CHUNK = 500


def register(app: typer.Typer) -> None:
    app.add_typer(pricing_app, name="pricing")


def _run(work: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
    """Run work on one connection to the configured database, failing cleanly."""
    import asyncpg

    from schemas.settings import CommonSettings, get_settings

    dsn = addresses(get_settings(CommonSettings), database=True).database_url

    async def go() -> T:
        conn = await asyncpg.connect(dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"{what}: {exc} (is Postgres up and migrated? `meterline dev status`)")


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"{option} {value!r} is not an RFC 3339 time, e.g. 2025-06-01T00:00:00Z", code=2)
    if ts.utcoffset() is None:
        fail(f"{option} {value!r} has no offset; add Z or +HH:MM", code=2)
    return bounded_time(ts, option)


@pricing_app.command("import")
def import_litellm(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="LiteLLM's model_prices_and_context_window.json."
    ),
    effective_from: str | None = typer.Option(
        None, "--effective-from", help="When the prices take effect (RFC 3339); default now."
    ),
    provider: str | None = typer.Option(
        None, "--provider", help="Import only this litellm_provider (e.g. openai, anthropic)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Parse and report; write nothing."),
) -> None:
    """Import LiteLLM's price map as new price versions (unchanged prices are skipped)."""
    from datetime import UTC

    from rich.progress import Progress

    from processors import catalog as catalog_db
    from processors.litellm_import import drop_unchanged, load_litellm_file, parse_litellm

    when = _parse_time(effective_from, "--effective-from") or datetime.now(UTC).replace(
        microsecond=0
    )
    try:
        data = load_litellm_file(file)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {file}: {exc}")
    result = parse_litellm(data, effective_from=when, provider=provider)
    console.log(f"parsed {len(data)} entries: {len(result.versions)} priced per token")

    if dry_run:
        _summary(len(result.versions), result.skip_reasons(), dry_run=True)
        for v in result.versions[:20]:
            out.print(f"  {v.model}: in {v.input_per_mtok} out {v.output_per_mtok} /Mtok")
        if len(result.versions) > 20:
            out.print(f"  … and {len(result.versions) - 20} more")
        return

    async def write(conn: asyncpg.Connection) -> tuple[int, int, int]:
        current = await catalog_db.load_catalog(conn)
        changed, unchanged = drop_unchanged(result.versions, current)
        inserted = 0
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("importing price versions", total=len(changed))
            async with conn.transaction():
                for i in range(0, len(changed), _CHUNK):
                    chunk = changed[i : i + _CHUNK]
                    added = await catalog_db.insert_price_versions(
                        conn, versions=chunk, created_by=f"litellm-import:{file.name}"
                    )
                    inserted += len(added)
                    progress.advance(task, len(chunk))
        return inserted, len(unchanged), len(changed) - inserted

    inserted, unchanged, existing = _run(write, "pricing import")
    reasons = result.skip_reasons()
    if unchanged:
        reasons["price unchanged from the version in force"] += unchanged
    if existing:
        reasons[f"a version at {when.isoformat()} already exists"] += existing
    _summary(inserted, reasons, dry_run=False)


def _summary(imported: int, reasons: dict[str, int], *, dry_run: bool) -> None:
    verb = "would import" if dry_run else "imported"
    out.print(f"{verb} {imported} price versions; skipped {sum(reasons.values())}")
    for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        out.print(f"  {n:>6}  {reason}")


@pricing_app.command("seed")
def seed() -> None:
    """Insert the shipped price catalog; versions already present are left alone."""
    from processors import catalog as catalog_db

    async def work(conn: asyncpg.Connection) -> int:
        return await catalog_db.seed_catalog(conn)

    added = _run(work, "pricing seed")
    total = len(catalog_db.shipped_versions())
    out.print(f"seeded {added} new price versions ({total - added} already present)")


@pricing_app.command("list")
def list_prices(
    model: str | None = typer.Option(
        None, "--model", help="Show every version of this model (aliases accepted)."
    ),
    at: str | None = typer.Option(None, "--at", help="Prices in force at this time (RFC 3339)."),
) -> None:
    """The prices in force now (or --at), or one model's version history."""
    from processors import catalog as catalog_db

    when = _parse_time(at, "--at")

    async def work(
        conn: asyncpg.Connection,
    ) -> tuple[list[PriceVersion], list[catalog_db.UnusablePrice]]:
        cat, unusable = await catalog_db.load_catalog_checked(conn)
        if model is None:
            return await catalog_db.list_current_prices(conn, at=when), unusable
        key = cat.resolve(model)
        return (cat.history(key) if key is not None else []), unusable

    versions, unusable = _run(work, "pricing list")
    for bad in unusable:
        console.print(
            tagged(
                f"unusable price version {bad.id} of {bad.model!r} is skipped:",
                "yellow",
                f" {bad.reason}; add a correct version with a later effective_from",
            )
        )
    if not versions:
        if model is not None:
            fail(f"no price versions for model {model!r}; see `meterline pricing list`")
        out.print(
            "the catalog is empty: run `meterline pricing seed` or `meterline pricing import`"
        )
        return
    _table(versions)


def _table(versions: list[PriceVersion]) -> None:
    from rich.table import Table

    from processors.pricing import plain

    table = Table(title="credits per million tokens", title_justify="left")
    for col in ("model", "provider", "effective_from", "input", "cached", "cache write", "output"):
        table.add_column(col, justify="right" if col in {"input", "output"} else "left")
    table.add_column("per request", justify="right")
    table.add_column("units")

    def opt(d: Decimal | None) -> str:
        return "=input" if d is None else plain(d)

    for v in versions:
        table.add_row(
            v.model,
            v.provider or "",
            v.effective_from.isoformat(),
            plain(v.input_per_mtok),
            opt(v.cached_input_per_mtok),
            opt(v.cache_write_per_mtok),
            plain(v.output_per_mtok),
            plain(v.per_request),
            ", ".join(f"{k}={plain(p)}" for k, p in sorted(v.units.items())),
        )
    out.print(table)
