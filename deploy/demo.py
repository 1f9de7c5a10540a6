"""The demo: stack up, worker and API started, a synthetic stream published and metered, then
throughput and balances read back through the API and checked against the ledger itself. It
ends on the dashboard: its address and a user key for the busiest account are printed, and
with keep_running the worker and the API stay up until Ctrl-C.

Everything runs the way a user would run it: the `meterline` commands as processes and the
HTTP API over loopback.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from deploy import stack
from schemas.money import format_micros
from schemas.settings import meterline_home

Say = Callable[[str], None]
GRANT = Decimal("25")  # credits allocated to each demo account
WINDOW_DAYS = 14  # usage spread over the last two weeks, so the dashboard's charts have days
SHOWCASE_CAP = "50"  # a monthly cap on the account the dashboard opens on, to show the bar


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _meterline(*args: str) -> list[str]:
    return [sys.executable, "-m", "meterline", *args]


class Processes:
    """Child processes of the demo, stopped on exit whatever happens."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        handle = open(log, "wb")  # noqa: SIM115 - owned by the child
        child = subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


async def _wait_http(url: str, wait_s: float, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not come up at {url}")
            await asyncio.sleep(0.25)


async def _debited(pool: asyncpg.Pool, prefix: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM usage_events WHERE source = 'demo' AND event_id LIKE $1",
            prefix + "%",
        )
    )


def run(*, events: int, accounts: int, port: int, say: Say, keep_running: bool = False) -> int:
    """Run the demo; returns a process exit code (0 when balances match the ledger).

    With keep_running the worker and the API stay up (for the dashboard) until Ctrl-C.
    """
    say("bringing the stack up (Kafka + PostgreSQL)")
    st = stack.up(say)
    env = dict(
        os.environ,
        METERLINE_KAFKA_BOOTSTRAP=st.kafka_bootstrap,
        METERLINE_DATABASE_URL=st.database_url,
    )
    logs = meterline_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    try:
        return asyncio.run(
            _run(
                st,
                env,
                logs,
                procs,
                events=events,
                accounts=accounts,
                port=_free_port(port),
                say=say,
                keep_running=keep_running,
            )
        )
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        procs.stop()
        say(
            f"worker and API stopped (logs in {logs}); the stack stays up: "
            "`meterline dev down` stops it"
        )


async def _run(
    st: stack.StackStatus,
    env: dict[str, str],
    logs: Path,
    procs: Processes,
    *,
    events: int,
    accounts: int,
    port: int,
    say: Say,
    keep_running: bool,
) -> int:
    say("starting the metering worker")
    worker = procs.start(_meterline("worker"), logs / "worker.log", env)
    say(f"starting the API on http://127.0.0.1:{port} (OpenAPI at /docs)")
    api = procs.start(_meterline("api", "--port", str(port)), logs / "api.log", env)
    base = f"http://127.0.0.1:{port}"
    await _wait_http(f"{base}/healthz", 60, api)

    key = await _create_key(env, "--scope", "admin")
    say(f"created an admin key ({key[:19]}…)")
    run_id = secrets.token_hex(3)
    ids = [f"acct-{i:05d}" for i in range(accounts)]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        for start in range(0, accounts, 1000):
            r = await client.post(
                "/api/v1/admin/credits/bulk-allocate",
                json={
                    "allocations": [
                        {
                            "account_id": a,
                            "amount": str(GRANT),
                            "reason": "demo grant",
                            "idempotency_key": f"demo-{run_id}-{a}",
                        }
                        for a in ids[start : start + 1000]
                    ]
                },
            )
            r.raise_for_status()
        # The pro tier has no default monthly cap: the demo shows balances, not cap blocks.
        for a in ids:
            r = await client.put(f"/api/v1/admin/accounts/{a}/tier", json={"tier": "pro"})
            r.raise_for_status()
        say(f"allocated {GRANT} credits to each of {accounts} accounts (tier pro)")

        pool = await asyncpg.create_pool(st.database_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            seed = int(run_id, 16)
            prefix = f"syn-{seed}-"
            say(f"publishing {events:,} synthetic usage events")
            t0 = time.monotonic()
            await asyncio.to_thread(
                subprocess.run,
                _meterline(
                    "produce",
                    "--synthetic",
                    str(events),
                    "--accounts",
                    str(accounts),
                    "--seed",
                    str(seed),
                    "--source",
                    "demo",
                    "--window-days",
                    str(WINDOW_DAYS),
                ),
                env=env,
                check=True,
            )
            say("waiting for the worker to debit them")
            deadline = time.monotonic() + max(120, events / 500)
            done = 0
            while done < events:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{done} of {events} debited; see {logs}/worker.log")
                await asyncio.sleep(0.2)
                done = await _debited(pool, prefix)
            elapsed = time.monotonic() - t0
            say(
                f"throughput: {events:,} events published and debited in {elapsed:.1f}s "
                f"= {events / elapsed:,.0f} events/s end to end"
            )

            sample = ids[:3] + ids[-2:] if accounts > 5 else ids
            mismatches = 0
            print(
                f"\n{'account':<12} {'balance (API)':>15} {'sum of ledger':>15} "
                f"{'usage rows':>10}  blocked"
            )
            for a in sample:
                bal = (await client.get("/api/v1/credits/balance", params={"account_id": a})).json()
                row = await pool.fetchrow(
                    "SELECT coalesce(sum(amount_micros), 0)::bigint AS total,"
                    " count(*) FILTER (WHERE type = 'usage') AS usage"
                    " FROM credit_transactions WHERE account_id = $1",
                    a,
                )
                ledger = format_micros(row["total"])
                ok = bal["balance"] == ledger
                mismatches += not ok
                print(
                    f"{a:<12} {bal['balance']:>15} {ledger:>15} {row['usage']:>10}  "
                    f"{bal['tier']:<5} {bal['blocked']}{'' if ok else '  MISMATCH'}"
                )
            bad = await pool.fetchval(
                "SELECT count(*) FROM user_credits u WHERE balance_micros <> (SELECT"
                " coalesce(sum(amount_micros), 0) FROM credit_transactions t"
                " WHERE t.account_id = u.account_id)"
            )
            print(f"\naccounts whose balance differs from the sum of their ledger rows: {bad}")
            code = 0 if not (mismatches or bad) else 1
        finally:
            await pool.close()
        # The busiest account (the generator's first) is the one worth opening.
        showcase = ids[0]
        r = await client.post(
            "/api/v1/credits/monthly-cap",
            params={"account_id": showcase},
            json={"monthly_cap": SHOWCASE_CAP},
        )
        r.raise_for_status()
    user_key = await _create_key(env, "--account", showcase, "--scope", "user")
    print(
        f"\ndashboard: {base}/dashboard\n"
        f"  paste this user key for {showcase} (monthly cap {SHOWCASE_CAP}): {user_key}\n"
        f"  or the admin key, for the system view and any account: {key}"
    )
    if keep_running:
        await _serve_until_interrupted(procs, logs, say)
    else:
        print("  (run `meterline demo --keep-running` to keep the worker and the API up for it)")
    return code


async def _create_key(env: dict[str, str], *args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        _meterline("admin", "create-key", *args),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


async def _serve_until_interrupted(procs: Processes, logs: Path, say: Say) -> None:
    say("the worker and the API keep running: press Ctrl-C to stop them")
    while True:
        for child in procs.children:
            if child.poll() is not None:
                raise RuntimeError(
                    f"a demo process exited with {child.returncode}; see the logs in {logs}"
                )
        await asyncio.sleep(1)
