"""The lean reference pipeline that `meterline bench pipeline` runs beside the worker.

The least work this box can do per event and still meter exactly once: aiokafka `getmany` →
`json.loads` → price from a dict of integer prices → one transaction per poll (`unnest` into a
usage table with ON CONFLICT DO NOTHING, the balances updated by one aggregated UPDATE) →
commit the offsets. One process, sequential, one connection. No validation, no ledger rows,
no caps, alerts, rollups or DLQ: what is left is the floor that the worker's extra work is
measured against.
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import asyncpg
from aiokafka import AIOKafkaConsumer

from processors.pricing import Catalog

_SCHEMA = """
DROP TABLE IF EXISTS ref_usage, ref_balances;
CREATE TABLE ref_usage (
    source text NOT NULL, event_id text NOT NULL, account_id text NOT NULL,
    cost_micros bigint NOT NULL, PRIMARY KEY (source, event_id));
CREATE TABLE ref_balances (account_id text PRIMARY KEY, balance_micros bigint NOT NULL);
"""

_DEBIT = """
WITH ins AS (
    INSERT INTO ref_usage (source, event_id, account_id, cost_micros)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
    ON CONFLICT DO NOTHING
    RETURNING account_id, cost_micros)
UPDATE ref_balances b SET balance_micros = b.balance_micros - s.total
FROM (SELECT account_id, sum(cost_micros) AS total FROM ins GROUP BY account_id) s
WHERE b.account_id = s.account_id
"""

# Prices per million tokens are micro-credits per token; kept in nano-credits as integers.
_NANO = Decimal(1000)


def _int_prices(catalog: Catalog) -> dict[str, tuple[int, int, int, int, int]]:
    """model → (input, cached, cache write, output per token, per request) in nano-credits."""
    out: dict[str, tuple[int, int, int, int, int]] = {}
    for v in catalog.versions():  # by model, oldest first: the newest version wins
        cached = (
            v.cached_input_per_mtok if v.cached_input_per_mtok is not None else v.input_per_mtok
        )
        write = v.cache_write_per_mtok if v.cache_write_per_mtok is not None else v.input_per_mtok
        out[v.model] = (
            int(v.input_per_mtok * _NANO),
            int(cached * _NANO),
            int(write * _NANO),
            int(v.output_per_mtok * _NANO),
            int(v.per_request * _NANO * 1_000_000),
        )
    return out


async def prepare(conn: asyncpg.Connection, accounts: list[str]) -> None:
    """Fresh reference tables with every account prepaid."""
    await conn.execute(_SCHEMA)
    await conn.execute(
        "INSERT INTO ref_balances SELECT a, 1000000000000 FROM unnest($1::text[]) a", accounts
    )


async def drain(
    dsn: str, bootstrap: str, topic: str, events: int, catalog: Catalog, *, batch_max: int = 2000
) -> float:
    """Meter `events` records of `topic` from its start; events/s, first fetch → last commit.

    Polls take up to batch_max records, the worker's batch size, so both do the same
    number of transactions.
    """
    prices = _int_prices(catalog)
    conn = await asyncpg.connect(dsn)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reference-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=batch_max,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    done, started = 0, 0.0
    try:
        while done < events:
            fetched = await consumer.getmany(timeout_ms=500, max_records=batch_max)
            if not fetched:
                continue
            started = started or time.monotonic()
            sources, ids, accounts, costs = [], [], [], []
            for records in fetched.values():
                for r in records:
                    e = json.loads(r.value)
                    p = prices[e["model"]]
                    nano = (
                        e.get("input_tokens", 0) * p[0]
                        + e.get("cached_input_tokens", 0) * p[1]
                        + e.get("cache_write_tokens", 0) * p[2]
                        + e.get("output_tokens", 0) * p[3]
                        + e.get("requests", 1) * p[4]
                    )
                    sources.append(e.get("source", "default"))
                    ids.append(e["event_id"])
                    accounts.append(e["account_id"])
                    costs.append((nano + 500) // 1000)
            async with conn.transaction():
                await conn.execute(_DEBIT, sources, ids, accounts, costs)
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in fetched.items()})
            done += len(ids)
    finally:
        await consumer.stop()
        await conn.close()
    return done / (time.monotonic() - started)
