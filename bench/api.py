"""`meterline bench api`: the HTTP API under load (uvicorn subprocess, 50 httpx clients).

Phases: GET /api/v1/credits/balance and POST /api/v1/credits/authorize, closed loop for a bounded
time; then pages of GET /api/v1/credits/transactions on one account whose ledger holds
`ledger_rows` rows (10,000,000 by default, seeded with generate_series into the bench's own
database, kept between runs).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import httpx

from api.routes.transactions import encode_cursor
from api.security import create_api_key
from schemas import migrate
from schemas.settings import CommonSettings

BIG = "bench-big"
Say = Callable[[str], None]


@dataclass
class ApiBenchConfig:
    duration_s: float = 10.0
    clients: int = 50
    accounts: int = 1000
    ledger_rows: int = 10_000_000
    page_requests: int = 300
    page_size: int = 50
    workers: int = 1
    port: int = 0
    database: str = "meterline_bench"


@dataclass
class PhaseResult:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    def line(self) -> str:
        return (
            f"{self.name:<28} {self.requests:>8} req  {self.rps:>8.0f} req/s  "
            f"p50 {self.pct(50):6.2f} ms  p99 {self.pct(99):6.2f} ms  "
            f"max {max(self.latencies_ms, default=0):7.2f} ms  errors {self.errors}"
        )


async def _bench_database(base_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(base_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = base_dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.up(conn)
    finally:
        await conn.close()
    return dsn


async def _seed(dsn: str, cfg: ApiBenchConfig, say: Say) -> tuple[list[str], str]:
    """Accounts with credit (one allocation row each, so balance = sum of rows) and user keys."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO tiers (name, rate_limit) VALUES ('bench', '1000000/second')"
            " ON CONFLICT (name) DO UPDATE SET rate_limit = EXCLUDED.rate_limit"
        )
        have = await conn.fetchval(
            "SELECT count(*) FROM user_credits WHERE account_id LIKE 'bench-acct-%'"
        )
        if have < cfg.accounts:
            say(f"seeding {cfg.accounts} accounts")
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO user_credits (account_id, balance_micros, tier)"
                    " SELECT 'bench-acct-' || g, 1000000000000, 'bench'"
                    " FROM generate_series(1, $1) g ON CONFLICT DO NOTHING",
                    cfg.accounts,
                )
                await conn.execute(
                    "INSERT INTO credit_transactions (account_id, type, amount_micros,"
                    " balance_after_micros, reason, idempotency_key)"
                    " SELECT 'bench-acct-' || g, 'allocation', 1000000000000, 1000000000000,"
                    " 'bench seed', 'bench-seed' FROM generate_series(1, $1) g"
                    " ON CONFLICT DO NOTHING",
                    cfg.accounts,
                )
        big = await conn.fetchval(
            "SELECT balance_micros FROM user_credits WHERE account_id = $1", BIG
        )
        if big != cfg.ledger_rows:
            say(f"seeding a ledger of {cfg.ledger_rows:,} rows for {BIG} (generate_series)")
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute("DELETE FROM credit_transactions WHERE account_id = $1", BIG)
                await conn.execute(
                    "INSERT INTO user_credits (account_id, balance_micros, tier)"
                    " VALUES ($1, $2, 'bench') ON CONFLICT (account_id) DO UPDATE"
                    " SET balance_micros = EXCLUDED.balance_micros",
                    BIG,
                    cfg.ledger_rows,
                )
                await conn.execute(
                    "INSERT INTO credit_transactions (account_id, type, amount_micros,"
                    " balance_after_micros, reason, created_at)"
                    " SELECT $1, CASE WHEN g % 10 = 0 THEN 'adjustment' ELSE 'allocation' END,"
                    " 1, g, 'bench row', now() - make_interval(secs => ($2 - g) / 100.0)"
                    " FROM generate_series(1, $2::bigint) g",
                    BIG,
                    cfg.ledger_rows,
                )
            await conn.execute("ANALYZE credit_transactions")
            say(f"  seeded in {time.perf_counter() - t0:.0f} s")
        accounts = [f"bench-acct-{i}" for i in range(1, cfg.accounts + 1)]
        keys = []
        for account in accounts[: cfg.clients]:
            _, key = await create_api_key(conn, account_id=account, scope="user")
            keys.append(key)
        _, big_key = await create_api_key(conn, account_id=BIG, scope="user")
        return keys, big_key
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_api(
    dsn: str, settings: CommonSettings, cfg: ApiBenchConfig, port: int
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        METERLINE_DATABASE_URL=dsn,
        METERLINE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        METERLINE_PG_POOL_MIN="10",
        METERLINE_PG_POOL_MAX="20",
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterline",
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(cfg.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )


async def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited with {proc.returncode}")
            try:
                if (await c.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the API did not answer /healthz in time")


async def _closed_loop(
    name: str,
    base: str,
    keys: list[str],
    duration_s: float,
    request: Callable[[httpx.AsyncClient], object],
) -> PhaseResult:
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def client(key: str) -> None:
        nonlocal errors
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base, limits=limits, headers={"Authorization": f"Bearer {key}"}
        ) as c:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await request(c)  # type: ignore[misc]
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    errors += 1

    # Warm-up: connections, pool, caches.
    stop_at = time.perf_counter() + 1.0
    await asyncio.gather(*(client(k) for k in keys))
    latencies.clear()
    errors = 0
    start = time.perf_counter()
    stop_at = start + duration_s
    await asyncio.gather(*(client(k) for k in keys))
    return PhaseResult(name, len(latencies), errors, time.perf_counter() - start, latencies)


async def _pages(base: str, key: str, cfg: ApiBenchConfig) -> list[PhaseResult]:
    results = []
    rng = random.Random(7)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
        max_id = cfg.ledger_rows
        first = await c.get("/api/v1/credits/transactions", params={"limit": cfg.page_size})
        if first.status_code != 200:
            raise RuntimeError(f"transactions page answered {first.status_code}: {first.text}")
        ids = [row["id"] for row in first.json()["items"]]
        max_id = max(ids) if ids else max_id
        shapes: list[tuple[str, Callable[[], dict[str, object]]]] = [
            ("page: newest", lambda: {"limit": cfg.page_size}),
            (
                "page: random cursor",
                lambda: {"limit": cfg.page_size, "cursor": encode_cursor(rng.randint(1, max_id))},
            ),
            (
                "page: type=adjustment",
                lambda: {
                    "limit": cfg.page_size,
                    "type": "adjustment",
                    "cursor": encode_cursor(rng.randint(1, max_id)),
                },
            ),
        ]
        for name, params in shapes:
            lat: list[float] = []
            errors = 0
            start = time.perf_counter()
            for _ in range(cfg.page_requests):
                t0 = time.perf_counter()
                r = await c.get("/api/v1/credits/transactions", params=params())  # type: ignore[arg-type]
                lat.append((time.perf_counter() - t0) * 1000)
                errors += r.status_code != 200
            results.append(PhaseResult(name, len(lat), errors, time.perf_counter() - start, lat))
    return results


async def run_api_bench(cfg: ApiBenchConfig, say: Say) -> list[PhaseResult]:
    """Seed, start the API, drive it, stop it; returns one result per phase."""
    settings = CommonSettings()
    dsn = await _bench_database(settings.database_url, cfg.database)
    keys, big_key = await _seed(dsn, cfg, say)
    port = cfg.port or _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_api(dsn, settings, cfg, port)
    results: list[PhaseResult] = []
    try:
        await _wait_ready(base, proc)
        say(
            f"API on {base} ({cfg.workers} worker(s)); {cfg.clients} clients, "
            f"{cfg.duration_s:.0f} s per phase"
        )
        results.append(
            await _closed_loop(
                "GET /credits/balance",
                base,
                keys,
                cfg.duration_s,
                lambda c: c.get("/api/v1/credits/balance"),
            )
        )
        say(results[-1].line())
        authorize = await httpx.AsyncClient(base_url=base).post(
            "/api/v1/credits/authorize",
            json={"estimated_cost": "0.01"},
            headers={"Authorization": f"Bearer {keys[0]}"},
        )
        if authorize.status_code == 404:
            say("POST /api/v1/credits/authorize is absent: skipped")
        else:
            results.append(
                await _closed_loop(
                    "POST /credits/authorize",
                    base,
                    keys,
                    cfg.duration_s,
                    lambda c: c.post("/api/v1/credits/authorize", json={"estimated_cost": "0.01"}),
                )
            )
            say(results[-1].line())
        for r in await _pages(base, big_key, cfg):
            results.append(r)
            say(r.line())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


def summary(results: list[PhaseResult]) -> str:
    """The figures as a block of text."""
    return (
        "\n".join(r.line() for r in results)
        + "\n(p50/p99 across all requests; "
        + (
            f"stdev of balance latency {statistics.pstdev(results[0].latencies_ms):.2f} ms)"
            if results and results[0].latencies_ms
            else ")"
        )
    )
