"""Every SQL statement that writes balances: small functions, connection first, $n placeholders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from processors.ledger.json_rows import json_rows
from processors.ledger.models import AccountState, Alert, LedgerRow


async def ensure_accounts(
    conn: asyncpg.Connection, *, account_ids: Sequence[str], tier: str
) -> None:
    """Create unknown accounts with the tier and its default cap (sorted: no lock cycles)."""
    await conn.execute(
        "INSERT INTO user_credits (account_id, tier, monthly_cap_micros)"
        " SELECT a, t.name, t.default_monthly_cap_micros"
        " FROM unnest($1::text[]) AS a, tiers t WHERE t.name = $2"
        " ORDER BY a ON CONFLICT (account_id) DO NOTHING",
        sorted(set(account_ids)),
        tier,
    )


async def lock_accounts(
    conn: asyncpg.Connection, *, account_ids: Sequence[str], month: date
) -> dict[str, AccountState]:
    """Lock the accounts' rows (in account order, so writers never deadlock) and read them.

    The read is a second statement on purpose: under READ COMMITTED a locking SELECT re-reads
    only the locked rows, so spend joined in the same statement could predate a concurrent
    writer that held the lock before us.
    """
    ids = sorted(set(account_ids))
    if len(ids) == 1:
        # One account (every API write): `= $1`, as read_accounts does, for the same reason.
        await conn.execute("SELECT 1 FROM user_credits WHERE account_id = $1 FOR UPDATE", ids[0])
    else:
        await conn.execute(
            "SELECT 1 FROM user_credits WHERE account_id = ANY($1::text[])"
            " ORDER BY account_id FOR UPDATE",
            ids,
        )
    return await read_accounts(conn, account_ids=ids, month=month)


# The read's WHERE clause, one of two constants (the values always travel as $n).
_WHERE_ONE = " WHERE u.account_id = $1"
_WHERE_ANY = " WHERE u.account_id = ANY($1::text[])"


async def read_accounts(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_ids: Sequence[str], month: date
) -> dict[str, AccountState]:
    """The accounts' state with the month's spend (no lock: callers lock first if they write).

    One account (balance, authorize) is read with `= $1`: with `= ANY($1::text[])` the same
    read took 3x the backend CPU (145 against 47 us a query, generic plan or not).
    """
    one = len(account_ids) == 1
    rows = await conn.fetch(
        "SELECT u.account_id, u.balance_micros, u.tier, u.monthly_cap_micros, u.blocked,"  # noqa: S608
        " u.low_balance_alerted, u.overdraft_micros, t.price_multiplier,"
        " coalesce(m.spend_micros, 0) AS spend, coalesce(m.alerted_pct, 0) AS alerted_pct,"
        # An expired hold stops counting at once: its status is swept later.
        " (SELECT coalesce(sum(h.amount_micros), 0)::bigint FROM credit_holds h"
        "  WHERE h.account_id = u.account_id AND h.status = 'active' AND h.expires_at > now())"
        " AS held"
        " FROM user_credits u JOIN tiers t ON t.name = u.tier"
        " LEFT JOIN monthly_spend m ON m.account_id = u.account_id AND m.month = $2"
        + (_WHERE_ONE if one else _WHERE_ANY),
        account_ids[0] if one else list(account_ids),
        month,
    )
    return {
        r["account_id"]: AccountState(
            account_id=r["account_id"],
            balance_micros=r["balance_micros"],
            tier=r["tier"],
            monthly_cap_micros=r["monthly_cap_micros"],
            monthly_spend_micros=r["spend"],
            alerted_pct=r["alerted_pct"],
            blocked=r["blocked"],
            low_balance_alerted=r["low_balance_alerted"],
            price_multiplier=r["price_multiplier"],
            overdraft_micros=r["overdraft_micros"],
            held_micros=r["held"],
        )
        for r in rows
    }


def _ledger_row(r: asyncpg.Record) -> LedgerRow:
    fields = dict(r)
    priced = fields.pop("priced")
    hashed = fields.pop("request_hash")
    return LedgerRow(
        **fields,
        request_hash=None if hashed is None else bytes(hashed),
        priced=None if priced is None else json.loads(priced),
    )


async def insert_ledger_rows(
    conn: asyncpg.Connection,
    *,
    account_ids: Sequence[str],
    types: Sequence[str],
    amounts: Sequence[int],
    balances_after: Sequence[int],
    reasons: Sequence[str | None],
    idempotency_keys: Sequence[str | None],
    sources: Sequence[str | None],
    event_ids: Sequence[str | None],
    models: Sequence[str | None],
    occurred_ats: Sequence[datetime | None],
    request_hashes: Sequence[bytes | None] | None = None,
    priced: Sequence[dict[str, Any] | None] | None = None,
) -> list[LedgerRow]:
    """Append ledger rows in one statement; returns them with ids, in input order."""
    rows = await conn.fetch(
        "WITH led AS (INSERT INTO credit_transactions (account_id, type, amount_micros,"
        " balance_after_micros, reason, idempotency_key, source, event_id, model, occurred_at,"
        " request_hash, priced)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],"
        " $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[],"
        " $12::text[]::jsonb[])"
        " RETURNING id, account_id, type, amount_micros, balance_after_micros, reason,"
        " idempotency_key, created_at, source, event_id, model, request_hash, priced),"
        # A key's global uniqueness (the ledger is partitioned by created_at): a second row with
        # the same (account, key) fails here, in the statement that writes it.
        " keys AS (INSERT INTO credit_transaction_keys (account_id, idempotency_key,"
        " transaction_id, created_at) SELECT account_id, idempotency_key, id, created_at"
        " FROM led WHERE idempotency_key IS NOT NULL)"
        " SELECT id, account_id, type, amount_micros, balance_after_micros, reason,"
        " idempotency_key, created_at, source, event_id, model, request_hash,"
        " priced::text AS priced FROM led",
        account_ids,
        types,
        amounts,
        balances_after,
        reasons,
        idempotency_keys,
        sources,
        event_ids,
        models,
        occurred_ats,
        list(request_hashes) if request_hashes is not None else [None] * len(account_ids),
        [None if p is None else json.dumps(p) for p in priced]
        if priced is not None
        else [None] * len(account_ids),
    )
    out = [_ledger_row(r) for r in rows]
    out.sort(key=lambda row: row.id)
    return out


async def find_idempotent_row(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, idempotency_key: str
) -> LedgerRow | None:
    """The ledger row a write with this key already made, if any."""
    # Through the key table: (transaction_id, created_at) finds the row in one partition.
    r = await conn.fetchrow(
        "SELECT c.id, c.account_id, c.type, c.amount_micros, c.balance_after_micros, c.reason,"
        " c.idempotency_key, c.created_at, c.source, c.event_id, c.model, c.request_hash,"
        " c.priced::text AS priced FROM credit_transaction_keys k"
        " JOIN credit_transactions c ON c.id = k.transaction_id AND c.created_at = k.created_at"
        " WHERE k.account_id = $1 AND k.idempotency_key = $2",
        account_id,
        idempotency_key,
    )
    return None if r is None else _ledger_row(r)


async def find_idempotent_rows(
    conn: asyncpg.Connection, *, account_ids: Sequence[str], idempotency_keys: Sequence[str]
) -> dict[tuple[str, str], LedgerRow]:
    """The ledger rows writes with these (account, key) pairs already made, by pair."""
    rows = await conn.fetch(
        "SELECT c.id, c.account_id, c.type, c.amount_micros, c.balance_after_micros, c.reason,"
        " c.idempotency_key, c.created_at, c.source, c.event_id, c.model, c.request_hash,"
        " c.priced::text AS priced FROM unnest($1::text[], $2::text[]) AS w(account_id, key)"
        " JOIN credit_transaction_keys k"
        " ON k.account_id = w.account_id AND k.idempotency_key = w.key"
        " JOIN credit_transactions c ON c.id = k.transaction_id AND c.created_at = k.created_at",
        list(account_ids),
        list(idempotency_keys),
    )
    out = {}
    for r in rows:
        row = _ledger_row(r)
        assert row.idempotency_key is not None
        out[(row.account_id, row.idempotency_key)] = row
    return out


async def save_account_states(conn: asyncpg.Connection, *, states: Sequence[AccountState]) -> None:
    """Write balances and flags of locked accounts back in one statement."""
    await conn.execute(
        "UPDATE user_credits u SET balance_micros = v.b, blocked = v.k, blocked_reason = v.r,"
        " low_balance_alerted = v.l, overdraft_micros = v.o, updated_at = now()"
        " FROM json_to_recordset($1::json) AS v(a text, b bigint, k bool, r text, l bool, o bigint)"
        " WHERE u.account_id = v.a",
        json_rows(
            [
                {
                    "a": s.account_id,
                    "b": s.balance_micros,
                    "k": s.blocked,
                    "r": s.should_block(),
                    "l": s.low_balance_alerted,
                    "o": s.overdraft_micros,
                }
                for s in states
            ]
        ),
    )


async def add_monthly_spend(
    conn: asyncpg.Connection,
    *,
    account_ids: Sequence[str],
    months: Sequence[date],
    spends: Sequence[int],
    alerted_pcts: Sequence[int],
) -> None:
    """Add spend per (account, month) and raise the alerted threshold where it grew."""
    await conn.execute(
        "INSERT INTO monthly_spend (account_id, month, spend_micros, alerted_pct)"
        " SELECT * FROM json_to_recordset($1::json) AS v(a text, m date, s bigint, p smallint)"
        " ON CONFLICT (account_id, month) DO UPDATE SET"
        " spend_micros = monthly_spend.spend_micros + excluded.spend_micros,"
        " alerted_pct = greatest(monthly_spend.alerted_pct, excluded.alerted_pct)",
        json_rows(
            [
                {"a": a, "m": m, "s": sp, "p": p}
                for a, m, sp, p in zip(account_ids, months, spends, alerted_pcts, strict=True)
            ]
        ),
    )


async def insert_usage_and_ledger(
    conn: asyncpg.Connection, *, rows_json: str, keys: Sequence[tuple[str, str]]
) -> dict[int, int]:
    """Record usage events and their ledger rows in one statement; returns {position: row id}
    of the events that were new (keys[n] is the (source, event_id) of position n).

    rows_json is a JSON array of events under short keys (batch._row; a value equal to its
    column's default may be absent), each with its position n, cost c, the terms it was rated
    with (price version pv, tier multiplier pm, byok fee percent fee), origin (kp, ko) and
    resolved provider (rp), without duplicate (source, event_id). Events already debited
    are skipped: their keys are in debited_events, whose primary key is the global uniqueness
    that partitioned usage_events cannot hold (ON CONFLICT DO NOTHING waits for a concurrent
    writer of the same event, so it is never debited twice). Ledger rows carry balance_after: the
    locked balance minus the running sum of the account's new costs, in position order.
    """
    rows = await conn.fetch(
        "WITH ev AS (SELECT n, s AS source, e AS event_id, a AS account_id, t AS occurred_at,"
        " m AS model, p AS provider, i, ci, cw, o, r, q, u, b, rc, md, c AS cost, pv, pm, fee,"
        " kp, ko, rp FROM json_to_recordset($1::json) AS x(n int, s text, e text, a text,"
        " t timestamptz, m text, p text, i bigint, ci bigint, cw bigint, o bigint, r bigint,"
        " q bigint, u jsonb, b bool, rc numeric, md jsonb, c bigint, pv bigint, pm numeric,"
        " fee numeric, kp int, ko bigint, rp text)),"
        " fresh AS (INSERT INTO debited_events (source, event_id) SELECT source, event_id"
        " FROM ev ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id),"
        " new AS (SELECT ev.* FROM ev JOIN fresh USING (source, event_id)),"
        " ins AS (INSERT INTO usage_events (source, event_id, account_id, occurred_at, model,"
        " provider, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,"
        " reasoning_tokens, requests, units, byok, cost_micros, price_version_id,"
        " price_multiplier, byok_fee_pct, reported_cost, metadata, kafka_partition,"
        " kafka_offset)"
        " SELECT source, event_id, account_id, occurred_at, model, coalesce(rp, provider),"
        " coalesce(i, 0), coalesce(ci, 0), coalesce(cw, 0), coalesce(o, 0), coalesce(r, 0),"
        " coalesce(q, 1), nullif(u, '{}'::jsonb), coalesce(b, false), cost, pv, pm, fee, rc,"
        " md, kp, ko FROM new),"
        " led AS (INSERT INTO credit_transactions (account_id, type, amount_micros,"
        " balance_after_micros, source, event_id, model, occurred_at)"
        " SELECT new.account_id, 'usage', -new.cost, u.balance_micros - sum(new.cost)"
        " OVER (PARTITION BY new.account_id ORDER BY new.n), new.source, new.event_id,"
        " new.model, new.occurred_at FROM new JOIN user_credits u USING (account_id)"
        " ORDER BY new.n RETURNING id, source, event_id)"
        # The rows written, and how many events were new. Not a join of `new` and `led`: the
        # planner sees two CTEs without statistics and loops over one for each row of the other
        # (measured: 1.2 s for a 2,000-event batch against 0.1 s for the whole batch without).
        " SELECT id, source, event_id, (SELECT count(*) FROM new) AS new_rows FROM led"
        " UNION ALL SELECT NULL, NULL, NULL, (SELECT count(*) FROM new)"
        " WHERE NOT EXISTS (SELECT 1 FROM led)",
        rows_json,
    )
    written = {(r["source"], r["event_id"]): r["id"] for r in rows if r["id"] is not None}
    if rows and rows[0]["new_rows"] != len(written):
        raise RuntimeError("ledger rows do not match new usage events; batch rolled back")
    return {n: written[key] for n, key in enumerate(keys) if key in written}


async def debited_accounts(
    conn: asyncpg.Connection,
    *,
    sources: Sequence[str],
    event_ids: Sequence[str],
    occurred_ats: Sequence[datetime | None],
) -> dict[tuple[str, str], str]:
    """The account each of these already-debited (source, event_id) keys was debited for.

    Only for keys insert_usage_and_ledger found taken (the rare path). usage_events is
    partitioned by occurred_at: a redelivery carries the debited occurred_at, so the first
    probe is one index lookup in one partition; the second, only when the first finds nothing
    (another account's event, or a republication at another time), looks in every partition.
    Each is a correlated subquery, so the plan is index probes per key whatever the statistics.
    A key with no usage row (it should not happen) is absent from the answer; an occurred_at
    of None (reconcile: not known) skips the first probe.
    """
    rows = await conn.fetch(
        "SELECT k.s, k.e, coalesce("
        " (SELECT u.account_id FROM usage_events u WHERE u.source = k.s AND u.event_id = k.e"
        "  AND u.occurred_at = k.t LIMIT 1),"
        " (SELECT u.account_id FROM usage_events u WHERE u.source = k.s AND u.event_id = k.e"
        "  LIMIT 1)) AS account_id"
        " FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(s, e, t)",
        list(sources),
        list(event_ids),
        list(occurred_ats),
    )
    return {(r["s"], r["e"]): r["account_id"] for r in rows if r["account_id"] is not None}


async def record_duplicates(
    conn: asyncpg.Connection, *, sources: Sequence[str], event_ids: Sequence[str]
) -> None:
    """Count redeliveries that were recognised and not debited."""
    await conn.execute(
        "INSERT INTO duplicate_events (source, event_id, times_seen)"
        " SELECT s, e, count(*) FROM unnest($1::text[], $2::text[]) AS d(s, e) GROUP BY s, e"
        " ON CONFLICT (source, event_id) DO UPDATE SET"
        " times_seen = duplicate_events.times_seen + excluded.times_seen, last_seen_at = now()",
        sources,
        event_ids,
    )


async def add_daily_usage(conn: asyncpg.Connection, *, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add to the daily rollup: (account, day, model, provider, events, 7 counters, cost) rows."""
    await conn.execute(
        "INSERT INTO usage_daily (account_id, day, model, provider, events, input_tokens,"
        " cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, requests,"
        " cost_micros)"
        " SELECT * FROM json_to_recordset($1::json) AS v(a text, d date, m text, p text,"
        " n bigint, i bigint, ci bigint, cw bigint, o bigint, r bigint, q bigint, c bigint)"
        " ON CONFLICT (account_id, day, model, provider) DO UPDATE SET"
        " events = usage_daily.events + excluded.events,"
        " input_tokens = usage_daily.input_tokens + excluded.input_tokens,"
        " cached_input_tokens = usage_daily.cached_input_tokens + excluded.cached_input_tokens,"
        " cache_write_tokens = usage_daily.cache_write_tokens + excluded.cache_write_tokens,"
        " output_tokens = usage_daily.output_tokens + excluded.output_tokens,"
        " reasoning_tokens = usage_daily.reasoning_tokens + excluded.reasoning_tokens,"
        " requests = usage_daily.requests + excluded.requests,"
        " cost_micros = usage_daily.cost_micros + excluded.cost_micros",
        json_rows(
            [
                {
                    "a": r[0],
                    "d": r[1],
                    "m": r[2],
                    "p": r[3],
                    "n": r[4],
                    "i": r[5],
                    "ci": r[6],
                    "cw": r[7],
                    "o": r[8],
                    "r": r[9],
                    "q": r[10],
                    "c": r[11],
                }
                for r in rows
            ]
        ),
    )


async def queue_alerts(conn: asyncpg.Connection, *, alerts: Sequence[Alert]) -> None:
    """Write alerts to the outbox in the caller's transaction."""
    if not alerts:
        return
    await conn.execute(
        "INSERT INTO alert_outbox (account_id, kind, payload)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
        [a.account_id for a in alerts],
        [a.kind for a in alerts],
        [json.dumps(a.payload) for a in alerts],
    )


async def claim_pending_alerts(
    conn: asyncpg.Connection, *, limit: int
) -> list[tuple[int, str, str]]:
    """Lock up to `limit` unpublished alerts (id, account_id, payload JSON); skip locked ones."""
    rows = await conn.fetch(
        "SELECT id, account_id, payload::text AS payload FROM alert_outbox"
        " WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [(r["id"], r["account_id"], r["payload"]) for r in rows]


async def mark_alerts_published(conn: asyncpg.Connection, *, ids: Sequence[int]) -> None:
    """Mark outbox rows as published."""
    await conn.execute(
        "UPDATE alert_outbox SET published_at = now() WHERE id = ANY($1::bigint[])", list(ids)
    )


async def ledger_sum(conn: asyncpg.Connection, *, account_id: str) -> int:
    """The sum of an account's ledger rows (what its balance must equal)."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(amount_micros), 0)::bigint FROM credit_transactions"
        " WHERE account_id = $1",
        account_id,
    )
    return int(value)
