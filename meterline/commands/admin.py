"""`meterline admin ...`: create API keys, allocate or grant credit, the monthly allocations."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import typer

from meterline.commands._common import addresses, console, fail, out

if TYPE_CHECKING:
    import asyncpg

    from processors.ledger import MonthlyGrant
    from processors.settings import LedgerSettings

admin_app = typer.Typer(help="Admin helpers: API keys, allocations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


async def _connect() -> tuple[LedgerSettings, asyncpg.Connection]:
    import asyncpg

    from processors.settings import LedgerSettings
    from schemas.settings import get_settings

    settings = addresses(get_settings(LedgerSettings), database=True)
    return settings, await asyncpg.connect(settings.database_url)


@admin_app.command("create-key")
def create_key(
    account: str | None = typer.Option(None, "--account", help="The account (user keys)"),
    scope: str = typer.Option("user", "--scope", help="user or admin"),
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    if scope not in ("user", "admin"):
        fail(f"--scope must be user or admin, got {scope!r}")
    if scope == "user" and not account:
        fail("a user key needs --account")

    async def run() -> tuple[str, str]:
        from processors.api_keys import create_api_key
        from processors.ledger import ensure_account

        settings, conn = await _connect()
        try:
            if account:
                await ensure_account(conn, account_id=account, tier=settings.default_tier)
            return await create_api_key(conn, account_id=account, scope=scope)  # type: ignore[arg-type]
        finally:
            await conn.close()

    key_id, key = asyncio.run(run())
    console.print(
        f"created {scope} key {key_id}"
        + (f" for {account}" if account else "")
        + "; it is shown once, store it now:"
    )
    out.print(key, highlight=False, soft_wrap=True)


@admin_app.command("allocate")
def allocate(
    account: str = typer.Option(..., "--account", help="The account to credit"),
    amount: str = typer.Option(..., "--amount", help='Credits, a decimal such as "10.5"'),
    reason: str = typer.Option(..., "--reason", help="Why (kept on the ledger row)"),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", help="Rerunning with the same key writes nothing new"
    ),
) -> None:
    """Add credit to an account through the ledger."""
    from schemas.money import MoneyError, format_micros, to_micros

    try:
        micros = to_micros(amount)
    except MoneyError as exc:
        fail(f"--amount: {exc}")
    if micros <= 0:
        fail("--amount must be greater than 0")
    key = idempotency_key or f"cli:{uuid.uuid4()}"

    async def run() -> tuple[int, int, bool]:
        from processors.ledger import post_entry

        settings, conn = await _connect()
        try:
            r = await post_entry(
                conn,
                account_id=account,
                type="allocation",
                amount_micros=micros,
                reason=reason,
                idempotency_key=key,
                policy=settings.ledger_policy(),
            )
            return r.row.id, r.row.balance_after_micros, r.replayed
        finally:
            await conn.close()

    from processors.ledger import IdempotencyConflict

    try:
        row_id, balance, replayed = asyncio.run(run())
    except IdempotencyConflict as exc:
        fail(str(exc))
    what = "already allocated (replay)" if replayed else "allocated"
    out.print(
        f"{what} {format_micros(micros)} to {account}: transaction {row_id}, "
        f"balance {format_micros(balance)}, idempotency key {key}"
    )


def _when(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{flag}: {text!r} is not an RFC 3339 time such as 2026-12-31T23:59:59Z")
    if at.tzinfo is None:
        fail(f"{flag}: {text!r} needs an offset (Z or +hh:mm)")
    return at


@admin_app.command("grant")
def grant(
    account: str = typer.Option(..., "--account", help="The account to credit"),
    amount: str = typer.Option(..., "--amount", help='Credits, a decimal such as "10.5"'),
    reason: str = typer.Option(..., "--reason", help="Why (kept on the ledger row and grant)"),
    category: str = typer.Option("paid", "--category", help="paid or promotional"),
    priority: int = typer.Option(50, "--priority", help="0-100; lower burns first"),
    effective_at: str | None = typer.Option(
        None, "--effective-at", help="RFC 3339; from when it may be burned (default: now)"
    ),
    expires_at: str | None = typer.Option(
        None, "--expires-at", help="RFC 3339; when its remainder expires (default: never)"
    ),
    applies_to: list[str] | None = typer.Option(
        None, "--applies-to", help="A model or provider prefix it pays for (repeatable)"
    ),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", help="Rerunning with the same key writes nothing new"
    ),
) -> None:
    """Grant credit with every attribute (category, priority, expiry, applicability)."""
    from processors.ledger import GRANT_CATEGORIES, GrantTerms
    from schemas.money import MoneyError, format_micros, to_micros

    try:
        micros = to_micros(amount)
    except MoneyError as exc:
        fail(f"--amount: {exc}")
    if micros <= 0:
        fail("--amount must be greater than 0")
    if category not in GRANT_CATEGORIES:
        fail(f"--category must be one of {', '.join(GRANT_CATEGORIES)}, got {category!r}")
    if not 0 <= priority <= 100:
        fail(f"--priority must be between 0 and 100, got {priority}")
    start, end = _when(effective_at, "--effective-at"), _when(expires_at, "--expires-at")
    if end is not None and end <= (start or datetime.now(UTC)):
        fail("--expires-at must be later than --effective-at (default: now)")
    terms = GrantTerms(category, priority, start, end, tuple(applies_to) if applies_to else None)
    key = idempotency_key or f"cli:{uuid.uuid4()}"

    async def run() -> tuple[int, int, int, bool]:
        from processors.ledger import post_entry

        settings, conn = await _connect()
        try:
            r = await post_entry(
                conn,
                account_id=account,
                type="allocation",
                amount_micros=micros,
                reason=reason,
                idempotency_key=key,
                policy=settings.ledger_policy(),
                grant=terms,
            )
            assert r.grant is not None
            return r.grant.grant_id, r.row.id, r.row.balance_after_micros, r.replayed
        finally:
            await conn.close()

    from processors.ledger import IdempotencyConflict

    try:
        grant_id, row_id, balance, replayed = asyncio.run(run())
    except IdempotencyConflict as exc:
        fail(str(exc))
    what = "already granted (replay)" if replayed else "granted"
    out.print(
        f"{what} {format_micros(micros)} to {account} as {category} grant {grant_id} "
        f"(priority {priority}, expires {end.isoformat() if end else 'never'}): "
        f"transaction {row_id}, balance {format_micros(balance)}, idempotency key {key}"
    )


@admin_app.command("grant-monthly")
def grant_monthly(
    month: str | None = typer.Option(None, "--month", help="YYYY-MM (default: this UTC month)"),
) -> None:
    """Give every account its tier's monthly allocation, once per month (safe to rerun)."""
    if month is None:
        first = datetime.now(UTC).date().replace(day=1)
    else:
        try:
            first = datetime.strptime(month, "%Y-%m").date()
        except ValueError:
            fail(f"--month must be YYYY-MM, got {month!r}")
        if first > datetime.now(UTC).date().replace(day=1):
            fail(f"--month {month} is in the future; a month is granted once it has begun")

    async def run(first: date) -> MonthlyGrant:
        from processors.ledger import grant_monthly_allocations

        settings, conn = await _connect()
        try:
            return await grant_monthly_allocations(
                conn, month=first, policy=settings.ledger_policy()
            )
        finally:
            await conn.close()

    g = asyncio.run(run(first))
    total = Decimal(g.granted_micros) / 1_000_000
    out.print(
        f"{g.month}: granted {g.granted} account(s) {total:f} credits in all; "
        f"{g.already} already had this month's allocation"
    )
