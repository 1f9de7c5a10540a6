"""SQL migrations: numbered up/down files applied in order, recorded in schema_migrations."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.(?P<dir>up|down)\.sql$")
_CREATES = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?(?P<kind>TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[a-z0-9_]+)",
    re.IGNORECASE,
)
_DROPS = re.compile(
    r"DROP\s+(?P<kind>TABLE|INDEX)\s+(?:IF\s+EXISTS\s+)?(?P<name>[a-z0-9_]+)", re.IGNORECASE
)
# Serialises migrators across processes (any constant; "meterline" in ASCII).
_LOCK_ID = 0x6D657465726C696E


@dataclass(frozen=True)
class Migration:
    """One numbered migration with its up and down SQL."""

    version: int
    name: str
    up: str
    down: str

    @property
    def creates(self) -> list[tuple[str, str]]:
        """(kind, name) of every table and index the up script creates."""
        return [(m["kind"].upper(), m["name"]) for m in _CREATES.finditer(self.up)]

    @property
    def drops(self) -> list[tuple[str, str]]:
        """(kind, name) of every table and index the up script drops."""
        return [(m["kind"].upper(), m["name"]) for m in _DROPS.finditer(self.up)]


def load_migrations() -> list[Migration]:
    """The migrations shipped in schemas/migrations, in version order."""
    files: dict[tuple[int, str], dict[str, str]] = {}
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            key = (int(m["version"]), m["name"])
            files.setdefault(key, {})[m["dir"]] = entry.read_text()
    out = []
    for (version, name), sql in sorted(files.items()):
        if "up" not in sql or "down" not in sql:
            raise RuntimeError(f"migration {version:04d}_{name} needs both .up.sql and .down.sql")
        out.append(Migration(version, name, sql["up"], sql["down"]))
    return out


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


async def applied_versions(conn: asyncpg.Connection) -> dict[int, datetime]:
    """Applied migration versions with when they were applied."""
    await _ensure_table(conn)
    rows = await conn.fetch("SELECT version, applied_at FROM schema_migrations ORDER BY version")
    return {r["version"]: r["applied_at"] for r in rows}


async def status(conn: asyncpg.Connection) -> list[tuple[Migration, datetime | None]]:
    """Every known migration with its applied time, None when pending."""
    done = await applied_versions(conn)
    return [(m, done.get(m.version)) for m in load_migrations()]


async def verify(conn: asyncpg.Connection, migration: Migration) -> list[str]:
    """Names of the tables and indexes the migration should have created but are missing."""
    missing = []
    for kind, name in migration.creates:
        relkind = ("r", "p") if kind == "TABLE" else ("i", "I")
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = $1 AND c.relkind::text = ANY($2::text[])"
            " AND n.nspname = current_schema()",
            name,
            list(relkind),
        )
        if not found:
            missing.append(f"{kind.lower()} {name}")
    return missing


async def up(conn: asyncpg.Connection, *, target: int | None = None) -> list[Migration]:
    """Apply pending migrations up to target (all by default), each in its own transaction."""
    applied: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        done = await applied_versions(conn)
        for m in load_migrations():
            if m.version in done or (target is not None and m.version > target):
                continue
            async with conn.transaction():
                await conn.execute(m.up)
                missing = await verify(conn, m)
                if missing:
                    raise RuntimeError(
                        f"migration {m.version:04d}_{m.name} applied but is missing: "
                        + ", ".join(missing)
                    )
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    m.version,
                    m.name,
                )
            applied.append(m)
        await ensure_partitions(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied


async def ensure_partitions(conn: asyncpg.Connection) -> int:
    """Create the ledger's monthly partitions up to two months ahead (0009's
    ensure_ledger_partitions, idempotent), so a database works before any worker runs; 0 when
    the schema has no partitions yet (a target below 0009)."""
    if not await conn.fetchval("SELECT to_regproc('ensure_ledger_partitions') IS NOT NULL"):
        return 0
    return int(await conn.fetchval("SELECT ensure_ledger_partitions()"))


async def down(conn: asyncpg.Connection, *, steps: int = 1) -> list[Migration]:
    """Roll back the last `steps` applied migrations, newest first."""
    rolled: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        done = await applied_versions(conn)
        by_version = {m.version: m for m in load_migrations()}
        for version in sorted(done, reverse=True)[:steps]:
            m = by_version.get(version)
            if m is None:
                raise RuntimeError(f"applied migration {version:04d} is not known to this build")
            async with conn.transaction():
                await conn.execute(m.down)
                await conn.execute("DELETE FROM schema_migrations WHERE version = $1", version)
            rolled.append(m)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return rolled


def backup(dsn: str, folder: Path) -> Path:
    """pg_dump the database (custom format) into folder; returns the file written."""
    pg_dump = shutil.which("pg_dump") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None
    )
    if pg_dump is None:
        raise RuntimeError("pg_dump not found; install the PostgreSQL client or skip --backup")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"meterline-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.dump"
    # The password goes through the environment, never argv (visible in ps) or an error.
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
        dsn = urlunsplit(parts._replace(netloc=netloc))
    proc = subprocess.run(
        [pg_dump, "--format=custom", f"--file={target}", f"--dbname={dsn}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        target.unlink(missing_ok=True)
        raise RuntimeError(f"pg_dump failed ({proc.returncode}): {proc.stderr.strip()}")
    return target
