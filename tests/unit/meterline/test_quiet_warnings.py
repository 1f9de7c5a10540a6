"""A library warning repeated by the thousand (aiokafka's 'Unable connect to node …' for every
pending send while the broker is away) reaches the CLI's stderr once per interval with a count
of the rest, not once each: a produce of 60,000 events printed 198,004 such lines in 10 s."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from meterline.commands._common import quiet_repeated_warnings


@pytest.fixture
def quiet() -> Iterator[None]:
    quiet_repeated_warnings(every_s=0.3)
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "meterline_quiet", False)]:
        root.removeHandler(handler)


def test_a_warning_repeated_500_times_is_shown_once_then_counted(
    quiet: None, capfd: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("aiokafka.client")
    for _ in range(500):
        log.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    logging.getLogger("aiokafka.cluster").error("Unable to update metadata from %s", [1])
    time.sleep(0.35)
    log.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    lines = capfd.readouterr().err.splitlines()
    assert lines == [
        "Unable connect to node with id 1: Connect call failed",
        "Unable to update metadata from [1]",
        "Unable connect to node with id 1: Connect call failed (and 499 more like it in 0 s)",
    ]


def test_installing_it_twice_adds_one_handler(quiet: None) -> None:
    quiet_repeated_warnings()
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "meterline_quiet", False)]
    assert len(handlers) == 1
