"""`meterline bench writes` runs against the migrated schema and writes one row per event."""

from __future__ import annotations

import uuid

from bench.writes import WRITES, report, run


async def test_every_write_runs_against_the_current_schema(database_url: str) -> None:
    # A migration that renames a column or adds a NOT NULL one breaks a staged write here,
    # not in a benchmark run; run() also checks one row per event in each per-event table.
    name = f"meterline_test_writes_{uuid.uuid4().hex[:8]}"
    f = await run(database_url, batch=50, accounts=20, rounds=3, database=name, say=lambda _: None)

    assert set(f.writes_us) == {w.name for w in WRITES}
    assert all(us > 0 for us in f.writes_us.values())
    assert f.reference_us > 0
    assert 0 < f.invariants_us < f.total_us  # the usage row, spend and rollup are left out
    lines = report(f)
    assert any(line.strip().startswith("all of them") for line in lines)
    assert lines[-2].startswith("ratio") and "invariants" in lines[-1]
