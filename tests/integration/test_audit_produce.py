"""`meterline produce` with hostile lines (issue 13's sweep): each bad line is reported by
number and skipped, the good lines around it are published, and the run never ends in a
traceback (a line past Python's JSON limits or a byte that is not UTF-8 used to end it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.settings import CommonSettings
from tests.integration.conftest import TopicFactory, env_for
from tests.integration.test_publisher import consume, run_cli


def _hostile_file() -> bytes:
    good = {"account_id": "acct-1", "occurred_at": "2025-03-01T12:00:00Z", "model": "m"}
    return b"\n".join(
        [
            json.dumps({**good, "event_id": "before"}).encode(),
            b'\xff\xfe{"event_id": "utf16-bom"}',  # not UTF-8
            b'{"event_id": "huge", "input_tokens": ' + b"9" * 5000 + b"}",
            b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            json.dumps({**good, "event_id": "after"}).encode(),
        ]
    )


@pytest.mark.parametrize("via", ["file", "stdin"])
async def test_produce_reports_each_unreadable_line_and_publishes_the_rest(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path, via: str
) -> None:
    topic = await topic_factory("usage.events", partitions=1)
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_usage_events=topic)
    data = _hostile_file()
    if via == "file":
        path = tmp_path / "events.jsonl"
        path.write_bytes(data)
        code, out, err = await run_cli("produce", str(path), env=env_for(settings))
    else:
        code, out, err = await run_cli("produce", "-", env=env_for(settings), stdin=data)
    assert "Traceback" not in err, err
    assert code == 1, err
    assert "published 2, bad 3, failed 0" in out, out + err
    message = " ".join(err.split())
    assert "line 2: (line): not UTF-8 text (a byte at column 1)" in message
    assert "line 3: (line): holds an integer of more than 4300 digits" in message
    assert "line 4: (line): not JSON this reader can hold: nested too deeply" in message
    records = await consume(kafka_bootstrap, topic, expected=2)
    assert [json.loads(r.value)["event_id"] for r in records] == ["before", "after"]
