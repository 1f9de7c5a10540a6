"""Reconcile's adjustment keys and the --from-offset parser (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.reconcile import Finding, adjustment_key, parse_adjustment_key
from processors.topic_range import RangeError, parse_partition_offset


def test_keys_name_what_they_correct() -> None:
    assert adjustment_key("missing", "default", "a1") == "reconcile:missing:default:a1"
    assert adjustment_key("amount", "p:x", "e/1", 2000, 0) == "reconcile:amount:p%3Ax:e%2F1:2000:0"


@given(
    st.sampled_from(["missing", "amount", "extra"]),
    st.text(min_size=1, max_size=64),
    st.text(min_size=1, max_size=128),
)
def test_keys_round_trip_whatever_the_ids(kind: str, source: str, event_id: str) -> None:
    assert parse_adjustment_key(adjustment_key(kind, source, event_id, 5, 1)) == (
        kind,
        source,
        event_id,
    )


def test_other_keys_are_not_reconciles() -> None:
    assert parse_adjustment_key("monthly:2025-06") is None
    assert parse_adjustment_key("reconcile:x") is None


def test_difference_is_what_the_account_still_owes() -> None:
    f = Finding("amount", "a", "s", "e", expected_micros=2000, charged_micros=4000)
    assert f.difference_micros == -2000
    assert f.as_dict()["difference"] == "-0.002000"


def test_partition_offset() -> None:
    assert parse_partition_offset("3:1200") == (3, 1200)
    for bad in ("3", "a:1", "3:-1", "", "1:2:3"):
        with pytest.raises(RangeError):
            parse_partition_offset(bad)
