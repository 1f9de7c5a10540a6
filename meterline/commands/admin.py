"""`meterline admin ...`: create API keys, allocate or grant credit, the monthly allocations."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

import typer

from meterline.commands._common import addresses, console, fail, out, run_work

if TYPE_CHECKING:
    import asyncpg
    from pydantic import BaseModel

    from processors.ledger import EntryResult, GrantTerms, MonthlyGrant
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
    from schemas.api_admin import ApiKeyIn

    if scope not in ("user", "admin"):
        fail(f"--scope must be user or admin, got {scope!r}", code=2)
    if scope == "user" and not account:
        fail("a user key needs --account", code=2)
    # The API's model of the same write: an account id with a control character is refused.
    account = _validated(ApiKeyIn, account_id=account, scope=scope).account_id

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

    key_id, key = run_work(run())
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
    from schemas.api_admin import AllocateIn
    from schemas.money import format_micros, to_micros

    body = _validated(
        AllocateIn,
        account_id=account,
        amount=amount,
        reason=reason,
        idempotency_key=idempotency_key or f"cli:{uuid.uuid4()}",
    )
    micros = to_micros(body.amount)
    r = _post_credit(body.account_id, micros, body.reason, body.idempotency_key)
    what = "already allocated (replay)" if r.replayed else "allocated"
    out.print(
        f"{what} {format_micros(micros)} to {account}: transaction {r.row.id}, "
        f"balance {format_micros(r.row.balance_after_micros)}, "
        f"idempotency key {body.idempotency_key}"
    )


M = TypeVar("M", bound="BaseModel")


def _validated(model: type[M], **values: object) -> M:
    """The flags' values through the API's own model of the same write, so the CLI refuses
    what the API refuses (bounds, control characters, amounts, times), naming the flag; a
    refused flag is a usage error, exit 2."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        fail(
            "; ".join(
                f"--{str(e['loc'][0]).replace('_', '-').replace('account-id', 'account')}: "
                f"{str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors(include_url=False)
            ),
            code=2,
        )


def _post_credit(
    account: str, micros: int, reason: str, key: str, terms: GrantTerms | None = None
) -> EntryResult:
    """An allocation through the ledger (with the grant's terms when given), in one run."""
    from processors.ledger import IdempotencyConflict, post_entry

    async def run() -> EntryResult:
        settings, conn = await _connect()
        try:
            return await post_entry(
                conn,
                account_id=account,
                type="allocation",
                amount_micros=micros,
                reason=reason,
                idempotency_key=key,
                policy=settings.ledger_policy(),
                grant=terms,
            )
        finally:
            await conn.close()

    try:
        return run_work(run())
    except IdempotencyConflict as exc:
        fail(str(exc))


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
    from processors.ledger import GrantTerms
    from schemas.api_grants import GrantIn
    from schemas.money import format_micros, to_micros

    body = _validated(
        GrantIn,
        account_id=account,
        amount=amount,
        category=category,
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        applies_to=applies_to or None,
        reason=reason,
        idempotency_key=idempotency_key or f"cli:{uuid.uuid4()}",
    )
    end = body.expires_at
    if end is not None and end <= datetime.now(UTC):
        fail("--expires-at must be in the future", code=2)
    terms = GrantTerms(
        body.category,
        body.priority,
        body.effective_at,
        end,
        None if body.applies_to is None else tuple(body.applies_to),
    )
    micros = to_micros(body.amount)
    r = _post_credit(body.account_id, micros, body.reason, body.idempotency_key, terms)
    assert r.grant is not None
    what = "already granted (replay)" if r.replayed else "granted"
    out.print(
        f"{what} {format_micros(micros)} to {account} as {body.category} grant "
        f"{r.grant.grant_id} (priority {body.priority}, "
        f"expires {end.isoformat() if end else 'never'}): transaction {r.row.id}, "
        f"balance {format_micros(r.row.balance_after_micros)}, "
        f"idempotency key {body.idempotency_key}"
    )


@admin_app.command("grant-monthly")
def grant_monthly(
    month: str | None = typer.Option(None, "--month", help="YYYY-MM (default: this UTC month)"),
) -> None:
    """Give every account its tier's monthly allocation, once per month (safe to rerun)."""
    this_month = datetime.now(UTC).date().replace(day=1)
    if month is None:
        first = this_month
    else:
        try:
            first = datetime.strptime(month, "%Y-%m").date()
        except ValueError:
            fail(f"--month must be YYYY-MM, got {month!r}", code=2)
        if first > this_month:
            fail(f"--month {month} is in the future; a month is granted once it has begun", code=2)

    async def run(first: date) -> MonthlyGrant:
        from processors.ledger import grant_monthly_allocations

        settings, conn = await _connect()
        try:
            return await grant_monthly_allocations(
                conn, month=first, policy=settings.ledger_policy()
            )
        finally:
            await conn.close()

    g = run_work(run(first))
    total = Decimal(g.granted_micros) / 1_000_000
    out.print(
        f"{g.month}: granted {g.granted} account(s) {total:f} credits in all; "
        f"{g.already} already had this month's allocation"
    )
