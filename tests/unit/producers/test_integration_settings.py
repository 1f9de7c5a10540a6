"""The LiteLLM integration's settings: METERLINE_LITELLM_* from the environment, the field's
name as a keyword, and nothing else."""

from __future__ import annotations

import os

import pytest

# LiteLLM fetches its cost map over the network at import unless told not to (no network here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from producers.integrations.litellm import MeterlineCallback  # noqa: E402
from producers.integrations.settings import IntegrationSettings  # noqa: E402


def test_bare_names_in_the_environment_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """SOURCE, MAX_HOLD… belong to whatever else runs in the proxy's environment; the source
    is half of every event's idempotency key, so it must not change under them."""
    for name, value in {
        "SOURCE": "someone-else",
        "ACCOUNT_FROM": "team",
        "MAX_HOLD": "1",
        "ON_UNREACHABLE": "closed",
    }.items():
        monkeypatch.setenv(name, value)
    s = IntegrationSettings.of()
    assert s.source == "litellm"
    assert s.account_from == ("end_user", "key_user", "team")
    assert s.max_hold is None
    assert s.on_unreachable == "open"


def test_prefixed_variables_are_read_and_keywords_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_LITELLM_SOURCE", "proxy-eu")
    monkeypatch.setenv("METERLINE_LITELLM_ACCOUNT_FROM", "key_user, team")
    monkeypatch.setenv("METERLINE_LITELLM_ON_UNREACHABLE", "closed")
    monkeypatch.setenv("METERLINE_API_URL", "http://meterline:8000")
    s = IntegrationSettings.of()
    assert (s.source, s.account_from, s.on_unreachable) == (
        "proxy-eu",
        ("key_user", "team"),
        "closed",
    )
    assert s.api_url == "http://meterline:8000"
    s = IntegrationSettings.of(source="proxy-us", on_unreachable="open", api_url="http://x:1")
    assert (s.source, s.on_unreachable, s.api_url) == ("proxy-us", "open", "http://x:1")


def test_an_unknown_keyword_is_an_error_naming_it_and_the_closest_setting() -> None:
    with pytest.raises(TypeError, match=r"'on_insuficient' \(did you mean 'on_insufficient'\?\)"):
        MeterlineCallback(on_insuficient="hold_available")
    with pytest.raises(TypeError, match="'colour'"):
        IntegrationSettings.of(colour="blue")


def test_a_misspelt_litellm_variable_is_logged_with_what_was_meant(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy runs no `meterline` command, so the callback itself names the variable."""
    monkeypatch.setenv("METERLINE_LITELLM_ON_UNREACHEABLE", "closed")
    monkeypatch.setenv("METERLINE_LITELLM_SOURCE", "proxy-eu")
    with caplog.at_level("WARNING", logger="meterline.integrations"):
        s = IntegrationSettings.of()
    assert s.on_unreachable == "open" and s.source == "proxy-eu"
    assert [r.getMessage() for r in caplog.records] == [
        "METERLINE_LITELLM_ON_UNREACHEABLE is not a meterline setting "
        "(did you mean METERLINE_LITELLM_ON_UNREACHABLE?); it is ignored"
    ]
