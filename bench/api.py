"""`meterline bench api`: the HTTP API under load (uvicorn subprocess, wrk or httpx clients).

Phases: GET /api/v1/credits/balance and POST /api/v1/credits/authorize, closed loop with a fixed
number of connections for a bounded time, beside the same routes of a minimal FastAPI app
(bench/reference_api.py: one pool, constant tokens, the same SQL, a pydantic response) served
the same way in the same run; the two alternate, each phase `repeat` times, and the medians and
their ratio are printed. Then both at a fixed rate of half the reference's closed-loop rate
(p99 there). Then reserve + release pairs from httpx clients (each reserve needs its own
idempotency key, which wrk's prepared requests cannot give) at 1,000 pairs/s (or --rate). Then
pages of GET /api/v1/credits/transactions on a month-partitioned ledger of `ledger_rows` rows
(10,000,000 by default, seeded with generate_series: bench/ledger_pages.py) in the bench's own
database, dropped at the end unless keep_database (`only_pages` skips the hot routes).

The load comes from `wrk` (C, epoll, a Lua script for the bearer keys and the POST body) when it
is installed: a Python load generator on the same cores takes CPU from the server it measures
and adds its own event-loop latency to every figure. Without wrk the bench says so and falls
back to httpx clients in this process; those figures bound the server from below only.

Each phase prints the 1-minute load average and the kernel's CPU pressure (`cpu-wait`: the
share of the last 10 s in which a runnable task waited for a CPU) at its end: on a shared box
the tail latency follows them more than it follows the code. --server-cpus and --load-cpus pin
both servers and wrk with taskset (alike for meterline and the reference; Postgres is not
pinned). --routes and --no-extras narrow a run to some hot routes.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg
import httpx

from bench.common import bench_database, drop_database
from bench.ledger_pages import BIG, LedgerShape, read_pages, seed_ledger
from bench.reference_api import reference_token
from processors.api_keys import create_api_key
from schemas.settings import CommonSettings

Say = Callable[[str], None]


@dataclass
class ApiBenchConfig:
    duration_s: float = 10.0
    clients: int = 50
    accounts: int = 1000
    ledger_rows: int = 10_000_000
    page_requests: int = 300
    page_size: int = 50
    workers: int = 1  # 2 measured worse on 2 shared cores (more throughput, longer tails)
    port: int = 0
    database: str = "meterline_bench"
    load: Literal["auto", "wrk", "httpx"] = "auto"
    threads: int = 2  # wrk threads (the connections are spread over them)
    rate: float = 0  # requests/s of the fixed-rate phases (wrk only); 0: half the reference's
    repeat: int = 3  # runs of each load phase; the figures are the medians
    ledger_months: int = 24
    ledger_accounts: int = 10_000
    only_pages: bool = False  # skip the hot routes: seed the ledger, read its pages
    keep_database: bool = False  # else dropped at the end (a 10M-row ledger is ~3 GB)

    @property
    def ledger(self) -> LedgerShape:
        return LedgerShape(
            self.ledger_rows,
            self.ledger_months,
            self.ledger_accounts,
            self.page_requests,
            self.page_size,
        )

    routes: tuple[str, ...] = ()  # hot routes to measure (HotRoute.key); () = all
    extras: bool = True  # the httpx reservation pairs and the transactions pages after them
    # CPUs for the servers and for wrk (taskset -c lists, both apps alike); "" = unpinned
    server_cpus: str = ""
    load_cpus: str = ""


def cpu_pressure() -> float | None:
    """/proc/pressure/cpu's `some avg10`: % of the last 10 s in which a runnable task waited
    for a CPU (other tenants of the box included); None where the kernel does not say."""
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
    except OSError:
        return None
    return float(some[1].removeprefix("avg10=")) if len(some) > 1 else None


@dataclass
class PhaseResult:
    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    tool: str = "httpx"
    load1: float = field(default_factory=lambda: os.getloadavg()[0])  # at the phase's end
    # The share of the last 10 s in which some runnable task waited for a CPU (Linux PSI).
    cpu_pressure: float | None = field(default_factory=lambda: cpu_pressure())

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @classmethod
    def from_latencies(
        cls, name: str, requests: int, errors: int, seconds: float, latencies_ms: list[float]
    ) -> PhaseResult:
        xs = sorted(latencies_ms)

        def pct(p: float) -> float:
            return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")

        return cls(name, requests, errors, seconds, pct(50), pct(99), max(xs, default=0.0))

    def line(self) -> str:
        return (
            f"{self.name:<28} {self.requests:>8} req  {self.rps:>8.0f} req/s  "
            f"p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms  "
            f"max {self.max_ms:7.2f} ms  errors {self.errors}  load {self.load1:.1f}"
            f"{'' if self.cpu_pressure is None else f' cpu-wait {self.cpu_pressure:.0f}%'}"
            f"  ({self.tool})"
        )


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
        if cfg.ledger_rows and (cfg.extras or cfg.only_pages):  # the pages read it
            await seed_ledger(conn, cfg.ledger, say)
        accounts = [f"bench-acct-{i}" for i in range(1, cfg.accounts + 1)]
        keys = []
        for account in accounts[: cfg.clients]:
            _, key = await create_api_key(conn, account_id=account, scope="user")
            keys.append(key)
        _, big_key = await create_api_key(conn, account_id=BIG, scope="user")
        return keys, big_key
    finally:
        await conn.close()


def _pinned(cpus: str, cmd: list[str]) -> list[str]:
    """cmd under `taskset -c cpus` (Linux), or as it is when cpus is empty."""
    if not cpus:
        return cmd
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("--server-cpus/--load-cpus need taskset (util-linux)")
    return [taskset, "-c", cpus, *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The loop and parser `meterline api` picks when installed (uvicorn[standard]), named so that
# meterline and the reference are served alike.
UVICORN_OPTIONS = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]


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
    cmd = [sys.executable, "-m", "meterline", "api", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(cfg.workers), "--no-access-log", *UVICORN_OPTIONS]
    return subprocess.Popen(_pinned(cfg.server_cpus, cmd), env=env)


def _start_reference(
    dsn: str, cfg: ApiBenchConfig, port: int, token: str, accounts: list[str]
) -> subprocess.Popen[bytes]:
    """The minimal FastAPI app of bench.reference_api, served as meterline is (same options,
    same CPUs)."""
    env = dict(os.environ)
    env.update(
        METERLINE_REFERENCE_DSN=dsn,
        METERLINE_REFERENCE_ACCOUNTS=",".join(accounts),
        METERLINE_REFERENCE_TOKEN=token,
    )
    cmd = [sys.executable, "-m", "uvicorn", "bench.reference_api:create_app", "--factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(cfg.workers)]
    cmd += ["--no-access-log", *UVICORN_OPTIONS]
    cwd = Path(__file__).resolve().parents[1]
    return subprocess.Popen(_pinned(cfg.server_cpus, cmd), env=env, cwd=cwd)


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
    seconds = time.perf_counter() - start
    return PhaseResult.from_latencies(name, len(latencies), errors, seconds, latencies)


WRK_SCRIPT = """\
-- meterline bench: the bearer keys in turn, one prepared request each; figures as JSON.
local reqs, n, i = {}, 0, 0
function init(args)
  local method, path, body = args[1], args[2], args[3]
  if body == "" then body = nil end
  interval_ms = tonumber(args[4])
  for k = 5, #args do
    local headers = {["Authorization"] = "Bearer " .. args[k]}
    if body then headers["Content-Type"] = "application/json" end
    n = n + 1
    reqs[n] = wrk.format(method, path, headers, body)
  end
end
function request()
  i = i % n + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MLBENCH {"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d,'
    .. ' "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

# With a delay() function wrk paces each thread to a schedule (one slot every interval_ms,
# from a monotonic clock through LuaJIT's ffi) instead of sending as fast as answers come.
WRK_PACING = """\
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } ml_timespec;
int clock_gettime(int clk_id, ml_timespec *tp);
]]
local ts = ffi.new("ml_timespec")
local next_at = nil
function delay()
  ffi.C.clock_gettime(1, ts)
  local now = tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  next_at = (next_at or now) + interval_ms
  if next_at < now then return 0 end
  return next_at - now
end
"""

# Reserve + release through wrk: each thread reserves with a fresh idempotency key (its
# number and a counter) and releases each hold it got back (the answer names the hold and its
# account) on its next request, so about half the requests are each. Arguments: the method
# (unused), the reservations path, a run id, the pacing interval, then account|key pairs.
WRK_RESERVE = """\
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local keys, held, nkeys, nheld, i, k = {}, {}, 0, 0, 0, 0
function init(args)
  path, run, interval_ms = args[2], args[3], tonumber(args[4])
  for a = 5, #args do
    local account, key = string.match(args[a], "^([^|]+)|(.+)$")
    keys[account] = "Bearer " .. key
    nkeys = nkeys + 1
    keys[nkeys] = account
  end
end
function request()
  if nheld > 0 then
    local hold = held[nheld]
    held[nheld] = nil
    nheld = nheld - 1
    return wrk.format("POST", path .. "/" .. hold[1] .. "/release",
      {["Authorization"] = keys[hold[2]]})
  end
  i = i % nkeys + 1
  k = k + 1
  local body = string.format(
    '{"amount": "0.000001", "ttl_seconds": 60, "idempotency_key": "bench-%s-%d-%d"}',
    run, tid or 0, k)
  return wrk.format("POST", path,
    {["Authorization"] = keys[keys[i]], ["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status == 201 then
    local id = string.match(body, '"reservation_id":"([^"]+)"')
    local account = string.match(body, '"account_id":"([^"]+)"')
    if id and account then
      nheld = nheld + 1
      held[nheld] = {id, account}
    end
  end
end
"""

WRK_MISSING = (
    "wrk is not installed: the figures below come from httpx clients in this Python process, "
    "which share the CPU with the server and add their own latency (an upper bound on "
    "latency, a lower bound on throughput). For server-bound figures install it "
    "(Debian/Ubuntu: `sudo apt-get install -y wrk`) and run again, or pass --load httpx "
    "to silence this note."
)


def wrk_path() -> str | None:
    """The wrk binary on PATH, or None."""
    return shutil.which("wrk")


def _run_wrk(
    wrk: str,
    script: Path,
    url: str,
    cfg: ApiBenchConfig,
    seconds: float,
    method: str,
    path: str,
    body: str,
    keys: list[str],
    interval_ms: float,
) -> dict[str, int]:
    cmd = [
        wrk,
        f"-t{max(1, min(cfg.threads, cfg.clients))}",
        f"-c{cfg.clients}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        method,
        path,
        body,
        f"{interval_ms:.6f}",
        *keys,
    ]
    cmd = _pinned(cfg.load_cpus, cmd)
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in run.stdout.splitlines():
        if line.startswith("MLBENCH "):
            figures: dict[str, int] = json.loads(line.removeprefix("MLBENCH "))
            return figures
    raise RuntimeError(f"wrk gave no figures (exit {run.returncode}): {run.stderr or run.stdout}")


async def _wrk_phase(
    wrk: str,
    name: str,
    base: str,
    keys: list[str],
    cfg: ApiBenchConfig,
    method: str,
    path: str,
    body: str = "",
    rate: float = 0,
    script_extra: str = "",
) -> PhaseResult:
    """`cfg.clients` wrk connections (1 s warm-up, then `duration_s`): a closed loop, or
    `rate` requests/s in all when rate > 0 (latency counted from each send, as wrk does).
    `script_extra` is Lua that replaces the request functions (WRK_RESERVE)."""
    threads = max(1, min(cfg.threads, cfg.clients))
    interval_ms = threads * 1000 / rate if rate > 0 else 0.0
    with tempfile.TemporaryDirectory(prefix="meterline-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(WRK_SCRIPT + script_extra + (WRK_PACING if rate > 0 else ""))
        args = (wrk, script, base, cfg)

        def run_body() -> str:
            # WRK_RESERVE takes a run id there: a fresh one per wrk run, so no two runs share
            # an idempotency key.
            return f"{body}-{secrets.token_hex(4)}" if script_extra else body

        await asyncio.to_thread(_run_wrk, *args, 1.0, method, path, run_body(), keys, interval_ms)
        f = await asyncio.to_thread(
            _run_wrk, *args, cfg.duration_s, method, path, run_body(), keys, interval_ms
        )
    errors = f["status"] + f["connect"] + f["read"] + f["write"] + f["timeout"]
    return PhaseResult(
        name,
        f["requests"],
        errors,
        f["duration_us"] / 1e6,
        f["p50_us"] / 1000,
        f["p99_us"] / 1000,
        f["max_us"] / 1000,
        tool=f"wrk -c{cfg.clients}" + (f" at {rate:.0f}/s" if rate > 0 else " closed loop"),
    )


async def _reservations(
    base: str, keys: list[str], cfg: ApiBenchConfig, rate: float
) -> list[PhaseResult]:
    """Reserve + release pairs from httpx clients (each reserve needs its own idempotency key,
    which a prepared wrk request cannot give): `rate` pairs/s in all, paced per client, or a
    closed loop when rate is 0. Latency is counted from each send."""
    reserve_ms: list[float] = []
    release_ms: list[float] = []
    errors = 0
    run = os.urandom(4).hex()

    async def client(n: int, key: str, seconds: float, record: bool) -> None:
        nonlocal errors
        interval = len(keys) / rate if rate > 0 else 0.0
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base, limits=limits, headers={"Authorization": f"Bearer {key}"}
        ) as c:
            start = time.perf_counter() + (interval * n / len(keys))
            i = 0
            while True:
                due = start + i * interval
                if due - start >= seconds:
                    return
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                t0 = time.perf_counter()
                r = await c.post(
                    "/api/v1/credits/reservations",
                    json={
                        "amount": "0.000001",
                        "ttl_seconds": 60,
                        "idempotency_key": f"bench-{run}-{n}-{i}-{record}",
                    },
                )
                t1 = time.perf_counter()
                ok = r.status_code == 201
                if ok:
                    rid = r.json()["reservation_id"]
                    r = await c.post(f"/api/v1/credits/reservations/{rid}/release")
                    ok = r.status_code == 200
                t2 = time.perf_counter()
                if record:
                    reserve_ms.append((t1 - t0) * 1000)
                    release_ms.append((t2 - t1) * 1000)
                    errors += not ok
                i += 1

    await asyncio.gather(*(client(n, k, 1.0, False) for n, k in enumerate(keys)))
    began = time.perf_counter()
    await asyncio.gather(*(client(n, k, cfg.duration_s, True) for n, k in enumerate(keys)))
    seconds = time.perf_counter() - began
    tool = f"httpx x{len(keys)}" + (f" at {rate:.0f} pairs/s" if rate > 0 else " closed loop")
    out = []
    for name, lat in (
        ("POST /reservations", reserve_ms),
        ("POST /reservations/release", release_ms),
    ):
        r = PhaseResult.from_latencies(name, len(lat), errors, seconds, lat)
        r.tool = tool
        out.append(r)
    return out


async def _pages(
    base: str, big_key: str, keys: list[str], cfg: ApiBenchConfig
) -> list[PhaseResult]:
    return [
        PhaseResult.from_latencies(f.name, len(f.latencies_ms), f.errors, f.seconds, f.latencies_ms)
        for f in await read_pages(base, big_key, keys, cfg.ledger)
    ]


@dataclass(frozen=True)
class HotRoute:
    """A route measured beside the reference: closed loop, then at half the reference's rate."""

    key: str  # its name on the command line (--routes)
    name: str
    method: str
    path: str
    body: str = ""
    wrk_script: str = ""  # Lua replacing the prepared requests (wrk only)


HOT_ROUTES = [
    HotRoute("balance", "GET /credits/balance", "GET", "/api/v1/credits/balance"),
    HotRoute(
        "authorize",
        "POST /credits/authorize",
        "POST",
        "/api/v1/credits/authorize",
        '{"estimated_cost": "0.01"}',
    ),
]
# Half reserves, half releases of the holds they made (wrk only: each reserve needs its own
# idempotency key and each release the id reserve answered).
RESERVE_ROUTE = HotRoute(
    "reserve",
    "POST /reservations + release",
    "POST",
    "/api/v1/credits/reservations",
    wrk_script=WRK_RESERVE,
)
ROUTE_KEYS = tuple(r.key for r in [*HOT_ROUTES, RESERVE_ROUTE])
RESERVATION_RATE = 1000.0  # issue 10: reserve + release pairs/s (p99 < 10 ms the goal)
GOAL_RATIO = 0.8  # issue 13: meterline >= 0.8 x the reference, closed loop
GOAL_P99_MS = 10.0  # ... and p99 < 10 ms at half the reference's closed-loop rate


async def _probe(base: str, key: str, routes: list[HotRoute]) -> None:
    """Each route answers 200 before it is measured (a load of 401s would measure nothing)."""
    async with httpx.AsyncClient(base_url=base) as c:
        for route in routes:
            if route is RESERVE_ROUTE:
                auth = {"Authorization": f"Bearer {key}"}
                body = {"amount": "0.000001", "idempotency_key": f"probe-{secrets.token_hex(8)}"}
                r = await c.post(route.path, json=body, headers=auth)
                if r.status_code == 201:
                    rid = r.json()["reservation_id"]
                    r = await c.post(f"{route.path}/{rid}/release", headers=auth)
                if r.status_code != 200:
                    raise RuntimeError(f"{base} {route.name} answered {r.status_code}: {r.text}")
                continue
            r = await c.request(
                route.method,
                route.path,
                content=route.body.encode() or None,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            if r.status_code != 200:
                raise RuntimeError(f"{base} {route.name} answered {r.status_code}: {r.text}")


def pinning(cfg: ApiBenchConfig) -> str:
    """How the servers and wrk share the CPUs, in words."""
    if not cfg.server_cpus and not cfg.load_cpus:
        return "servers and wrk unpinned"
    return (
        f"both servers on CPU(s) {cfg.server_cpus or 'any'}, wrk on CPU(s) "
        f"{cfg.load_cpus or 'any'} (taskset; Postgres unpinned)"
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _p99_runs(results: list[PhaseResult]) -> str:
    """Each run's p99 beside the box's CPU pressure then: a p99 measured while other tasks
    waited for a CPU much of the time is the box's more than the server's."""
    return ", ".join(
        f"{r.p99_ms:.2f}" + ("" if r.cpu_pressure is None else f" ({r.cpu_pressure:.0f} %)")
        for r in results
    )


def _median(results: list[PhaseResult], key: Callable[[PhaseResult], float]) -> PhaseResult:
    """The run in the middle by `key` (the lower middle of an even count)."""
    return sorted(results, key=key)[(len(results) - 1) // 2]


@dataclass
class Comparison:
    """One hot route, meterline beside the minimal FastAPI reference, each phase run N times."""

    route: str
    meterline: list[PhaseResult] = field(default_factory=list)
    reference: list[PhaseResult] = field(default_factory=list)
    rate: float = 0.0
    meterline_paced: list[PhaseResult] = field(default_factory=list)
    reference_paced: list[PhaseResult] = field(default_factory=list)

    @property
    def reference_rps(self) -> float:
        return _median(self.reference, lambda r: r.rps).rps

    @property
    def meterline_rps(self) -> float:
        return _median(self.meterline, lambda r: r.rps).rps

    @property
    def ratio(self) -> float:
        return self.meterline_rps / self.reference_rps if self.reference_rps else 0.0

    def lines(self) -> list[str]:
        def runs(rs: list[PhaseResult], fig: Callable[[PhaseResult], float], fmt: str) -> str:
            return ", ".join(format(fig(r), fmt) for r in rs)

        def errs(ml: list[PhaseResult], ref: list[PhaseResult]) -> str:
            n, m = sum(r.errors for r in ml), sum(r.errors for r in ref)
            return f"  ERRORS meterline {n}, reference {m}" if n or m else ""

        out = [
            f"{self.route}",
            f"  closed loop  meterline {self.meterline_rps:7.0f} req/s   reference "
            f"{self.reference_rps:7.0f} req/s   ratio {self.ratio:.2f} (goal >= {GOAL_RATIO})"
            f"{'  MET' if self.ratio >= GOAL_RATIO else '  NOT MET'}",
            f"               runs: meterline {runs(self.meterline, lambda r: r.rps, '.0f')};"
            f" reference {runs(self.reference, lambda r: r.rps, '.0f')}"
            f"{errs(self.meterline, self.reference)}",
        ]
        if self.meterline_paced:
            p50 = _median(self.meterline_paced, lambda r: r.p50_ms).p50_ms
            p99 = _median(self.meterline_paced, lambda r: r.p99_ms).p99_ms
            served = _median(self.meterline_paced, lambda r: r.rps).rps
            line = (
                f"  at {self.rate:.0f}/s    meterline p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
                f" ({served:.0f} req/s served)"
            )
            if self.reference_paced:
                ref50 = _median(self.reference_paced, lambda r: r.p50_ms).p50_ms
                ref99 = _median(self.reference_paced, lambda r: r.p99_ms).p99_ms
                line += f"   reference p50 {ref50:6.2f} ms  p99 {ref99:6.2f} ms"
            met = p99 < GOAL_P99_MS
            out.append(
                line + f"  (goal p99 < {GOAL_P99_MS:.0f} ms){'  MET' if met else '  NOT MET'}"
            )
            out.append(
                f"               runs (p99 ms, cpu-wait at its end): meterline "
                f"{_p99_runs(self.meterline_paced)}; reference "
                f"{_p99_runs(self.reference_paced)}"
                f"{errs(self.meterline_paced, self.reference_paced)}"
            )
        phases = self.meterline + self.reference + self.meterline_paced + self.reference_paced
        loads = [r.load1 for r in phases]
        waits = [r.cpu_pressure for r in phases if r.cpu_pressure is not None]
        out.append(
            f"               1-min load average over its phases {min(loads):.1f}-{max(loads):.1f}"
            + (f", cpu-wait {min(waits):.0f}-{max(waits):.0f} %" if waits else "")
        )
        return out


@dataclass
class ApiBenchReport:
    """Everything one `meterline bench api` run measured."""

    comparisons: list[Comparison]
    phases: list[PhaseResult]
    repeat: int
    tool: str


async def run_api_bench(cfg: ApiBenchConfig, say: Say) -> ApiBenchReport:
    """Seed, start meterline's API and the reference, drive them, stop them."""
    wrk = wrk_path() if cfg.load != "httpx" else None
    if cfg.load == "wrk" and wrk is None:
        raise RuntimeError("--load wrk: wrk is not on PATH (Debian/Ubuntu: apt-get install -y wrk)")
    if cfg.load == "auto" and wrk is None:
        say(WRK_MISSING)
    settings = CommonSettings().require(kafka=True, database=True)
    dsn = await bench_database(settings.database_url, cfg.database)
    keys, big_key = await _seed(dsn, cfg, say)
    token = secrets.token_urlsafe(32)
    base = f"http://127.0.0.1:{cfg.port or _free_port()}"
    ref_base = f"http://127.0.0.1:{_free_port()}"
    proc = _start_api(dsn, settings, cfg, int(base.rsplit(":", 1)[1]))
    # The reference serves the same accounts as meterline's keys, one constant token each.
    ref_accounts = [f"bench-acct-{j + 1}" for j in range(len(keys))]
    ref_keys = [reference_token(token, a) for a in ref_accounts]
    ref_proc = _start_reference(dsn, cfg, int(ref_base.rsplit(":", 1)[1]), token, ref_accounts)
    phases: list[PhaseResult] = []
    routes = [
        r
        for r in HOT_ROUTES + ([RESERVE_ROUTE] if wrk is not None else [])
        if not cfg.routes or r.key in cfg.routes
    ]
    comparisons = [] if cfg.only_pages else [Comparison(r.name) for r in routes]
    run_id = secrets.token_hex(4)
    # _seed made one key per account, in order: keys[j] is bench-acct-(j + 1)'s.
    accounts = [f"bench-acct-{j + 1}|{k}" for j, k in enumerate(keys)]
    ref_pairs = [f"{a}|{k}" for a, k in zip(ref_accounts, ref_keys, strict=True)]

    async def phase(
        name: str, url: str, ks: list[str], route: HotRoute, rate: float = 0
    ) -> PhaseResult:
        if wrk is not None:
            if route.wrk_script:
                pairs = accounts if url == base else ref_pairs
                r = await _wrk_phase(
                    wrk, name, url, pairs, cfg, "POST", route.path, run_id, rate, route.wrk_script
                )
            else:
                args = (route.method, route.path, route.body, rate)
                r = await _wrk_phase(wrk, name, url, ks, cfg, *args)
        else:
            content = route.body.encode() or None
            headers = {"Content-Type": "application/json"} if route.body else {}
            r = await _closed_loop(
                name,
                url,
                ks,
                cfg.duration_s,
                lambda c: c.request(route.method, route.path, content=content, headers=headers),
            )
        say(r.line())
        return r

    try:
        await _wait_ready(base, proc)
        await _wait_ready(ref_base, ref_proc)
        for url, key in ((base, keys[0]), (ref_base, ref_keys[0])):
            await _probe(url, key, routes)
        say(
            f"meterline on {base}, the minimal FastAPI reference on {ref_base} ({cfg.workers} "
            f"worker(s) each, uvloop + httptools); {cfg.clients} "
            f"{'wrk connections' if wrk else 'httpx clients'}, {cfg.duration_s:.0f} s per phase, "
            f"each phase {cfg.repeat}x (the two alternate, so both see the same box); "
            f"{pinning(cfg)}; load average {load_average()}"
        )
        for n in range(1, 0 if cfg.only_pages else cfg.repeat + 1):
            for route, cmp in zip(routes, comparisons, strict=True):
                ref = await phase(f"ref {route.name} #{n}", ref_base, ref_keys, route)
                cmp.reference.append(ref)
                cmp.meterline.append(await phase(f"{route.name} #{n}", base, keys, route))
        if wrk is not None and not cfg.only_pages:
            for cmp in comparisons:
                cmp.rate = cfg.rate or cmp.reference_rps / 2
            for n in range(1, cfg.repeat + 1):
                for route, cmp in zip(routes, comparisons, strict=True):
                    at = f"@{cmp.rate:.0f} #{n}"
                    cmp.meterline_paced.append(
                        await phase(f"{route.name} {at}", base, keys, route, cmp.rate)
                    )
                    cmp.reference_paced.append(
                        await phase(f"ref {route.name} {at}", ref_base, ref_keys, route, cmp.rate)
                    )
        # The target: 1,000 reserve + release pairs/s over the connections.
        reservations = cfg.extras and not cfg.only_pages
        rate = cfg.rate or RESERVATION_RATE
        for r in await _reservations(base, keys, cfg, rate) if reservations else []:
            phases.append(r)
            say(r.line())
        pages = (cfg.extras or cfg.only_pages) and cfg.ledger_rows
        for r in await _pages(base, big_key, keys, cfg) if pages else []:
            phases.append(r)
            say(r.line())
    finally:
        for p in (proc, ref_proc):
            p.terminate()
        for p in (proc, ref_proc):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not cfg.keep_database:
            await drop_database(settings.database_url, cfg.database)
            say(f"dropped the bench database {cfg.database} (--keep-database keeps it)")
    tool = f"wrk -c{cfg.clients} -t{cfg.threads}" if wrk else f"httpx x{cfg.clients}"
    tool += f"; {pinning(cfg)}"
    return ApiBenchReport(comparisons, phases, cfg.repeat, tool)


def summary(report: ApiBenchReport) -> str:
    """The figures as a block of text."""
    lines = [
        f"meterline beside the minimal FastAPI reference (bench/reference_api.py), {report.tool};"
        f" medians of {report.repeat} run(s):"
    ]
    for cmp in report.comparisons:
        lines.extend(cmp.lines())
    lines.extend(r.line() for r in report.phases)
    lines.append(
        "(closed loop: as fast as answers come, so latency = connections / throughput;"
        " at N/s: N requests/s in all over the same connections, latency from each send,"
        " N = half the reference's closed-loop rate unless --rate; pages one at a time, httpx)"
    )
    return "\n".join(lines)
