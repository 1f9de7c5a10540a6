"""Shared test configuration: hypothesis profiles, no test across 00:00 UTC, and no logging
handler left behind by a command run in-process."""

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    """In CI a skipped test is a failure: the integration suite must run, not be skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and session.exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) were skipped; failing the run", red=True)
        session.exitstatus = 1


# A test reads "today" or "this month" (to seed a daily rollup, to name the month a grant is
# for, to expect a cap to bind) and the API, the worker or a CLI process it drives reads its
# own clock again, up to seconds later. Across 00:00 UTC the two disagree, on the 1st of a
# month about the month too, and the test fails although each side was right at its instant.
# So a test that would start in the last MIDNIGHT_MARGIN_S of a UTC day starts just after
# midnight instead. What the ledger does at the turn itself is tested with a clock passed in
# (tests/integration/test_month_turn.py); tests that write with a clock of their own pass it.
MIDNIGHT_MARGIN_S = 60.0


def seconds_to_utc_midnight(now: datetime) -> float:
    """Seconds from `now` to the next 00:00 UTC."""
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


@pytest.fixture(autouse=True)
def _clear_of_utc_midnight() -> None:
    left = seconds_to_utc_midnight(datetime.now(UTC))
    if left < MIDNIGHT_MARGIN_S:
        time.sleep(left + 0.5)


@pytest.fixture(autouse=True)
def _no_quiet_handler_left_behind() -> Iterator[None]:
    """A command run in-process (run_work) installs the CLI's rate-limited stderr handler on
    the root logger, as its process would; it outlived the test and swallowed the lines a later
    test of that handler expected (test_quiet_warnings failed after test_cli_unreachable)."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        if getattr(handler, "meterline_quiet", False):
            root.removeHandler(handler)
