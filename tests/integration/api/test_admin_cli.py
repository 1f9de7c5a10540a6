"""`meterline admin` against the real database: create-key, allocate, grant-monthly (idempotent)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import asyncpg
import httpx

from api.settings import ApiSettings
from tests.integration.api.conftest import auth
from tests.integration.conftest import env_for


def _run(settings: ApiSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", "admin", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_create_key_and_allocate(
    api_settings: ApiSettings, client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    r = _run(api_settings, "create-key", "--account", "cli-acct", "--scope", "user")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("ml_")
    allocate_10 = "allocate --account cli-acct --amount 10 --reason cli --idempotency-key cli-1"
    r = _run(api_settings, *allocate_10.split())
    assert r.returncode == 0, r.stderr
    assert "balance 10.000000" in r.stdout
    r = _run(api_settings, *allocate_10.split())
    assert r.returncode == 0 and "replay" in r.stdout
    bad = _run(
        api_settings,
        "allocate",
        "--account",
        "cli-acct",
        "--amount",
        "1.0000001",
        "--reason",
        "cli",
    )
    assert bad.returncode != 0 and "6 decimal places" in bad.stderr
    balance = await client.get("/api/v1/credits/balance", headers=auth(key))
    assert balance.json()["balance"] == "10.000000"


async def test_grant_monthly_is_once_per_month(api_settings: ApiSettings, db: asyncpg.Pool) -> None:
    for account, tier in (("f1", "free"), ("f2", "free"), ("p1", "pro")):
        await db.execute(
            "INSERT INTO user_credits (account_id, tier) VALUES ($1, $2)", account, tier
        )
    await db.execute("UPDATE tiers SET monthly_allocation_micros = 3000000 WHERE name = 'pro'")
    r = _run(api_settings, "grant-monthly", "--month", "2025-03")
    assert r.returncode == 0, r.stderr
    assert "granted 3 account(s) 5 credits" in r.stdout
    again = _run(api_settings, "grant-monthly", "--month", "2025-03")
    assert "granted 0 account(s)" in again.stdout and "3 already" in again.stdout
    # A changed allocation does not grant the same month twice.
    await db.execute("UPDATE tiers SET monthly_allocation_micros = 4000000 WHERE name = 'pro'")
    third = _run(api_settings, "grant-monthly", "--month", "2025-03")
    assert "granted 0 account(s)" in third.stdout
    balances = dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits"))
    assert balances == {"f1": 1_000_000, "f2": 1_000_000, "p1": 3_000_000}
    keys = {r["idempotency_key"] for r in await db.fetch("SELECT * FROM credit_transactions")}
    assert keys == {"monthly:2025-03"}
    now = datetime.now(UTC)
    this_month = _run(api_settings, "grant-monthly")
    assert f"{now.year:04d}-{now.month:02d}: granted 3" in this_month.stdout
    assert _run(api_settings, "grant-monthly", "--month", "March").returncode != 0


async def test_allocate_and_grant_refuse_what_the_api_refuses(
    api_settings: ApiSettings, db: asyncpg.Pool
) -> None:
    """The CLI validates its flags with the API's own models: each refusal names the flag and
    the rule, exits non-zero without a traceback, and writes nothing."""
    base = ["--account", "cli-hostile", "--amount", "1", "--reason", "cli"]
    cases = [
        (["allocate", *base[:1], "a\x01b", *base[2:]], "--account", "U+0001"),
        (["allocate", *base[:3], "99999999999999999999", *base[4:]], "--amount", "12 digits"),
        (["allocate", *base[:5], "line\x07"], "--reason", "U+0007"),
        (
            ["grant", *base, "--expires-at", "9999-12-31T23:00:00-05:00"],
            "--expires-at",
            "representable range",
        ),
        (["grant", *base, "--effective-at", "0001-01-01T01:00:00+05:00"], "--effective-at", ""),
        (["grant", *base, "--expires-at", "2001-01-01T00:00:00Z"], "--expires-at", "future"),
        # argv cannot carry NUL itself; another C0 control stands for it.
        (["grant", *base, "--applies-to", "open\x1fai/"], "--applies-to", "U+001F"),
    ]
    for args, flag, rule in cases:
        r = _run(api_settings, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)  # a usage error, as click's
        assert flag in r.stderr and rule in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and "Value error" not in r.stderr, r.stderr
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 0
    assert await db.fetchval("SELECT count(*) FROM user_credits") == 0


async def test_create_key_refuses_an_account_the_api_refuses(
    api_settings: ApiSettings, db: asyncpg.Pool
) -> None:
    """create-key used to store a key (and create the account) for an id with a control
    character, which every later request of that key then acted on."""
    for account in ["a\x01b", "x" * 129]:
        r = _run(api_settings, "create-key", "--account", account, "--scope", "user")
        assert r.returncode == 2, (account, r.stdout, r.stderr)
        assert "--account" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not r.stdout.strip()  # no key printed
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0
    assert await db.fetchval("SELECT count(*) FROM user_credits") == 0
