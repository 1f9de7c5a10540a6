"""The usage spool: bounded, durable, drained without losing or inventing an event."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.integrations.spool import Spool, SpoolFull


def ev(i: int) -> dict[str, object]:
    return {"event_id": f"e{i}", "account_id": "acme", "input_tokens": i}


def test_events_wait_in_order_and_a_drain_takes_them_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", 10_000)
    assert spool.take() == [] and not spool.pending()
    spool.append([ev(1), ev(2)])
    spool.append([ev(3)])
    assert spool.pending()
    assert spool.take() == [ev(1), ev(2), ev(3)]
    spool.append([ev(4)])  # arrives during the drain: waits for the next one
    spool.done(failed=[ev(2)])  # ev(2) was not published: it goes back
    assert sorted(e["event_id"] for e in spool.take()) == ["e2", "e4"]
    spool.done(failed=[])
    assert not spool.pending() and spool.take() == []


def test_an_unfinished_drain_is_taken_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", 10_000)
    spool.append([ev(1)])
    assert spool.take() == [ev(1)]
    # the process died here (no done()); a new one finds the drained file and takes it again
    again = Spool(tmp_path / "s.jsonl", 10_000)
    spool.append([ev(2)])
    assert again.take() == [ev(1)]
    again.done(failed=[])
    assert again.take() == [ev(2)]


def test_the_spool_is_bounded_and_refuses_rather_than_drops(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", 1024)
    line = len(b'{"event_id":"e0","account_id":"acme","input_tokens":0}\n')
    fits = 1024 // line
    for _ in range(fits):
        spool.append([ev(0)])
    with pytest.raises(SpoolFull, match="full"):
        spool.append([ev(0)])
    assert len(spool.take()) == fits  # every accepted event is still there


def test_a_torn_line_is_handed_over_as_text_not_a_drain_that_fails_for_ever(
    tmp_path: Path,
) -> None:
    """A process killed mid-append leaves a line that is not JSON. take() raised on it, and
    the next take() found the same .draining file: no drain ever passed it again."""
    spool = Spool(tmp_path / "s.jsonl", 1 << 20)
    spool.append([ev(1)])
    with open(spool.path, "ab") as f:
        f.write(b'{"event_id": "e2", "acc')  # torn: no end, no newline
    spool.append([ev(3)])
    # the torn text alone (the next append starts a line of its own), the events around it whole
    assert spool.take() == [ev(1), '{"event_id": "e2", "acc', ev(3)]
    spool.done([])
    assert not spool.pending()
