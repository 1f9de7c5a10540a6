"""A bad flag is a usage error: exit 2, the flag named, no traceback, nothing started or
written (found by a hostile sweep: `api --port 99999` served on another port, `--host ''`
bound every interface, and the admin helpers exited 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.meterline.test_cli_times import _meterline


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["api", "--port", "99999"], "--port"),
        (["api", "--port", "0"], "--port"),
        (["api", "--host", ""], "--host"),
        (["api", "--host", "  "], "--host"),
        (["admin", "create-key", "--scope", "root"], "--scope"),
        (["admin", "create-key", "--scope", "user"], "--account"),
        (["admin", "grant-monthly", "--month", "2026-13"], "--month"),
        (["pricing", "list", "--at", "yesterday"], "--at"),
        (["pricing", "list", "--at", "2026-01-01T00:00:00"], "--at"),
        # produce --synthetic used to end in a pydantic traceback on the first event.
        (["produce", "--synthetic", "1", "--source", "s\x01"], "--source"),
        (["produce", "--synthetic", "1", "--source", "s" * 65], "--source"),
        # A backwards window read nothing and said 'read 0'; a partition named twice kept the
        # last; a --report nobody could write was found after the whole reconcile ran.
        (
            [
                "replay",
                "--topic",
                "usage.events",
                "--from",
                "2026-02-01T00:00:00Z",
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            "--to",
        ),
        (
            ["replay", "--topic", "usage.events", "--from-offset", "0:5", "--from-offset", "0:7"],
            "--from-offset",
        ),
        (
            [
                "reconcile",
                "--from",
                "2026-01-01T00:00:00Z",
                "--to",
                "2026-02-01T00:00:00Z",
                "--report",
                "/nonexistent-dir/r.json",
            ],
            "--report",
        ),
        # Its key is another account's for good: a retry could only dead-letter it again.
        (["replay", "--topic", "usage.dlq", "--retry", "conflicting_event"], "--retry"),
    ],
)
def test_a_bad_flag_exits_2_naming_it(tmp_path: Path, args: list[str], flag: str) -> None:
    r = _meterline(tmp_path, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert flag in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr
