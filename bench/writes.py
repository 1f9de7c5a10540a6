"""`meterline bench writes`: what the ledger's tables cost Postgres per event, by kind of write.

The worker's throughput against the lean reference (`bench pipeline`) is bounded by CPU per
event on both sides of the connection. This harness isolates the Postgres side of it: the rows
and index entries every debited event leaves, written from a batch staged inside the server
(no client, no parsing, no reads by the client), one statement per kind of write, in the
tables and indexes the migrations create. The reference's two writes (its usage row and the
aggregated balance UPDATE) run on the same staged batch, in the same round, so the ratio holds
on a noisy box where absolute figures move 2–3× from one run to the next.

What is left when this is subtracted from the worker's Postgres CPU (`bench pipeline`) is
the cost of shipping the batch (parsing its document) and of the reads the batch does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from bench.common import bench_database, drop_database

# One staged batch: `size` distinct new events over `accounts` accounts, made in the server.
_STAGE = (
    "DROP TABLE IF EXISTS stage, led;"
    " CREATE TEMP TABLE led (id bigint, account_id text, cost bigint);"
    " CREATE TEMP TABLE stage AS SELECT g AS n, 'bench'::text AS source,"
    " 'w-' || {round} || '-' || g AS event_id,"
    " 'acct-' || lpad((abs(hashint4(g + {round} * 7919)) % {accounts})::text, 6, '0')"
    " AS account_id, now() AS occurred_at, 'openai/gpt-4o-mini'::text AS model,"
    " 1040::bigint AS i, 315::bigint AS o, 345::bigint AS cost"
    " FROM generate_series(1, {size}) g;"
    " ANALYZE stage"
)

_SETUP = (
    "CREATE TABLE ref_usage (source text NOT NULL, event_id text NOT NULL,"
    " account_id text NOT NULL, cost_micros bigint NOT NULL, PRIMARY KEY (source, event_id));"
    " CREATE TABLE ref_balances (account_id text PRIMARY KEY, balance_micros bigint NOT NULL);"
    " INSERT INTO ref_balances SELECT 'acct-' || lpad(a::text, 6, '0'), 10^12"
    " FROM generate_series(0, $1 - 1) a;"
    " INSERT INTO user_credits (account_id, tier, balance_micros)"
    " SELECT account_id, 'pro', balance_micros FROM ref_balances;"
    " INSERT INTO credit_grants (account_id, category, amount_micros, remaining_micros,"
    " priority, effective_at) SELECT account_id, 'paid', 10^12, 10^12, 50, now() - interval '1 day'"
    " FROM ref_balances"
)

# The reference's writes: bench/reference.py's statement.
REFERENCE = (
    "WITH ins AS (INSERT INTO ref_usage SELECT source, event_id, account_id, cost FROM stage"
    " ON CONFLICT DO NOTHING RETURNING account_id, cost_micros)"
    " UPDATE ref_balances b SET balance_micros = b.balance_micros - s.total"
    " FROM (SELECT account_id, sum(cost_micros) AS total FROM ins GROUP BY account_id) s"
    " WHERE b.account_id = s.account_id"
)


@dataclass(frozen=True)
class Write:
    """One kind of write each debited event costs, and the rule that asks for it.

    `invariant`: a ledger invariant of DESIGN.md asks for it, whatever the schema; the others
    (the usage row, the month's spend, the daily rollup) are this schema's way to serve reads
    fast, which another design could make differently.
    """

    name: str
    why: str
    sql: str
    invariant: bool = True


# In the order the batch debit does them; each is the same rows and indexes, minus the parsing.
WRITES = (
    Write(
        "lock accounts",
        "invariant 6 (writers serialise per account)",
        "SELECT 1 FROM user_credits WHERE account_id IN (SELECT account_id FROM stage)"
        " ORDER BY account_id FOR UPDATE",
    ),
    Write(
        "dedupe row",
        "invariant 3 (debited_events: the global (source, event_id) key)",
        "INSERT INTO debited_events (source, event_id) SELECT source, event_id FROM stage"
        " ON CONFLICT DO NOTHING",
    ),
    Write(
        "usage row",
        "usage_events (stats, export, reconcile)",
        "INSERT INTO usage_events (source, event_id, account_id, occurred_at, model, provider,"
        " input_tokens, output_tokens, cost_micros, price_version_id, price_multiplier,"
        " byok_fee_pct) SELECT source, event_id, account_id, occurred_at, model, 'openai', i, o,"
        " cost, 1, 1, 5 FROM stage",
        invariant=False,
    ),
    Write(
        "ledger row",
        "invariant 1 (a row with balance_after; history pages' indexes)",
        "WITH l AS (INSERT INTO credit_transactions (account_id, type, amount_micros,"
        " balance_after_micros, source, event_id, model, occurred_at)"
        " SELECT s.account_id, 'usage', -s.cost, u.balance_micros - sum(s.cost)"
        " OVER (PARTITION BY s.account_id ORDER BY s.n), s.source, s.event_id, s.model,"
        " s.occurred_at FROM stage s JOIN user_credits u USING (account_id) ORDER BY s.n"
        " RETURNING id, account_id, -amount_micros)"
        " INSERT INTO led SELECT * FROM l",
    ),
    Write(
        "burn rows",
        "invariant 7 (which grant paid for each debit)",
        "INSERT INTO grant_burns (transaction_id, grant_id, account_id, kind, amount_micros)"
        " SELECT l.id, g.grant_id, l.account_id, 'debit', l.cost FROM led l"
        " JOIN credit_grants g USING (account_id)",
    ),
    Write(
        "grant remaining",
        "invariant 7 (each grant's remaining)",
        "UPDATE credit_grants g SET remaining_micros = g.remaining_micros - s.t"
        " FROM (SELECT account_id, sum(cost) AS t FROM stage GROUP BY 1) s"
        " WHERE g.account_id = s.account_id",
    ),
    Write(
        "balance",
        "invariant 2 (as the reference's UPDATE)",
        "UPDATE user_credits u SET balance_micros = u.balance_micros - s.t"
        " FROM (SELECT account_id, sum(cost) AS t FROM stage GROUP BY 1) s"
        " WHERE u.account_id = s.account_id",
    ),
    Write(
        "monthly spend",
        "caps (this month's spend per account)",
        "INSERT INTO monthly_spend (account_id, month, spend_micros)"
        " SELECT account_id, date_trunc('month', now())::date, sum(cost) FROM stage GROUP BY 1"
        " ON CONFLICT (account_id, month) DO UPDATE"
        " SET spend_micros = monthly_spend.spend_micros + excluded.spend_micros",
        invariant=False,
    ),
    Write(
        "daily rollup",
        "usage stats (usage_daily)",
        "INSERT INTO usage_daily (account_id, day, model, provider, events, input_tokens,"
        " output_tokens, cost_micros)"
        " SELECT account_id, current_date, model, 'openai', count(*), sum(i), sum(o), sum(cost)"
        " FROM stage GROUP BY account_id, model"
        " ON CONFLICT (account_id, day, model, provider) DO UPDATE"
        " SET events = usage_daily.events + excluded.events,"
        " input_tokens = usage_daily.input_tokens + excluded.input_tokens,"
        " output_tokens = usage_daily.output_tokens + excluded.output_tokens,"
        " cost_micros = usage_daily.cost_micros + excluded.cost_micros",
        invariant=False,
    ),
)


@dataclass(frozen=True)
class WritesFigures:
    """Median µs per event of each write, of them all, and of the reference's writes."""

    batch: int
    accounts: int
    rounds: int
    reference_us: float
    writes_us: dict[str, float]

    @property
    def total_us(self) -> float:
        return sum(self.writes_us.values())

    @property
    def invariants_us(self) -> float:
        """The writes the ledger invariants ask for, whatever the schema."""
        required = {w.name for w in WRITES if w.invariant}
        return sum(us for name, us in self.writes_us.items() if name in required)


async def run(
    base_dsn: str,
    *,
    batch: int = 2000,
    accounts: int = 10_000,
    rounds: int = 15,
    database: str = "meterline_bench_writes",
    say: Callable[[str], None] = print,
) -> WritesFigures:
    """Alternate the reference's writes and the ledger's, `rounds` staged batches each."""
    dsn = await bench_database(base_dsn, database, fresh=True)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_SETUP.replace("$1", str(int(accounts))))
        ref: list[float] = []
        per: dict[str, list[float]] = {w.name: [] for w in WRITES}
        for r in range(rounds):
            await conn.execute(_STAGE.format(round=r, accounts=int(accounts), size=int(batch)))
            async with conn.transaction():
                t = time.perf_counter()
                await conn.execute(REFERENCE)
                ref.append(time.perf_counter() - t)
            async with conn.transaction():
                for w in WRITES:
                    t = time.perf_counter()
                    await conn.execute(w.sql)
                    per[w.name].append(time.perf_counter() - t)
            say(f"  round {r + 1}/{rounds}")
        await _check(conn, events=batch * rounds)
    finally:
        await conn.close()
        await drop_database(base_dsn, database)
    scale = 1e6 / batch
    return WritesFigures(
        batch=batch,
        accounts=accounts,
        rounds=rounds,
        reference_us=statistics.median(ref) * scale,
        writes_us={k: statistics.median(v) * scale for k, v in per.items()},
    )


# Each staged event must have left one row in each per-event table: else the figures would
# time statements that wrote less than the batch debit does.
_COUNTS = (
    "SELECT (SELECT count(*) FROM debited_events), (SELECT count(*) FROM usage_events),"
    " (SELECT count(*) FROM credit_transactions WHERE type = 'usage'),"
    " (SELECT count(*) FROM grant_burns), (SELECT count(*) FROM ref_usage),"
    " (SELECT sum(events) FROM usage_daily)"
)


async def _check(conn: asyncpg.Connection, *, events: int) -> None:
    counts = tuple(await conn.fetchrow(_COUNTS))
    if counts != (events,) * 6:
        names = "debited_events, usage_events, usage ledger rows, burns, ref_usage, rollup events"
        raise RuntimeError(f"expected {events} rows each of {names}; found {counts}")


def report(f: WritesFigures) -> list[str]:
    """The figures as lines: each write, the sum, the reference and the ratio."""
    lines = [
        f"Postgres time per event, batches of {f.batch:,} new events over {f.accounts:,}"
        f" accounts, median of {f.rounds} rounds (staged in the server: no client, no parsing)",
    ]
    why = {w.name: w.why for w in WRITES}
    for name, us in f.writes_us.items():
        lines.append(f"  {name:16s} {us:6.1f} µs   {why[name]}")
    lines.append(f"  {'all of them':16s} {f.total_us:6.1f} µs")
    lines.append(
        f"  {'invariants only':16s} {f.invariants_us:6.1f} µs   (less usage row, spend, rollup)"
    )
    lines.append(f"reference writes   {f.reference_us:6.1f} µs   (its usage row + balance UPDATE)")
    ratio = f.total_us / f.reference_us if f.reference_us else float("inf")
    floor = f.invariants_us / f.reference_us if f.reference_us else float("inf")
    lines.append(f"ratio              {ratio:6.1f}x the reference's Postgres time per event")
    lines.append(f"                   {floor:6.1f}x for the invariants' writes alone")
    return lines
