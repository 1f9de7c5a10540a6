"""Importing LiteLLM's price map: exact per-million prices, skips with reasons, the dry run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest
from typer.testing import CliRunner

from processors.litellm_import import (
    drop_unchanged,
    load_litellm_file,
    model_id,
    parse_litellm,
    per_mtok,
)
from processors.pricing import Catalog, PriceVersion

SAMPLE = Path(__file__).parent / "data" / "litellm_prices_sample.json"
WHEN = datetime(2025, 6, 1, tzinfo=UTC)


def by_model(versions: list[PriceVersion]) -> dict[str, PriceVersion]:
    return {v.model: v for v in versions}


def test_parses_token_prices_into_exact_per_million_prices() -> None:
    result = parse_litellm(load_litellm_file(SAMPLE), effective_from=WHEN)
    got = by_model(result.versions)
    assert sorted(got) == [
        "anthropic/claude-sonnet-4-5",
        "databricks/databricks-gemini-2-5-pro",
        "gemini/gemini-2.5-flash",
        "openai/gpt-4o-mini",
        "openai/o4-mini",
        "openai/text-embedding-3-small",
        "vertex_ai/gemini-2.5-pro",
    ]
    mini = got["openai/gpt-4o-mini"]
    assert (mini.input_per_mtok, mini.cached_input_per_mtok, mini.output_per_mtok) == (
        D("0.15"),
        D("0.075"),
        D("0.6"),
    )
    assert mini.cache_write_per_mtok is None and mini.provider == "openai"
    assert mini.effective_from == WHEN and mini.id is None
    sonnet = got["anthropic/claude-sonnet-4-5"]
    assert (sonnet.input_per_mtok, sonnet.cache_write_per_mtok, sonnet.output_per_mtok) == (
        D("3"),
        D("3.75"),
        D("15"),
    )
    # 1.1e-06 × 1e6 in binary floats is 1.0999999999999999; the import must say 1.1.
    assert got["openai/o4-mini"].input_per_mtok == D("1.1")
    assert str(got["openai/o4-mini"].output_per_mtok) == "4.4"
    # Every digit LiteLLM wrote survives.
    assert got["databricks/databricks-gemini-2-5-pro"].output_per_mtok == D("9.999990000000002")
    # Input-only models (embeddings) cost nothing for output.
    assert got["openai/text-embedding-3-small"].output_per_mtok == 0
    assert got["vertex_ai/gemini-2.5-pro"].provider == "vertex_ai"


def test_a_dict_of_floats_gives_the_same_versions_as_the_file() -> None:
    from_text = parse_litellm(load_litellm_file(SAMPLE), effective_from=WHEN)
    with SAMPLE.open() as f:
        floats = json.load(f)  # plain json: floats, as a caller holding LiteLLM's dict has
    from_floats = parse_litellm(floats, effective_from=WHEN)
    assert from_floats.versions == from_text.versions


def test_skips_are_counted_with_reasons() -> None:
    result = parse_litellm(load_litellm_file(SAMPLE), effective_from=WHEN)
    skipped = dict(result.skipped)
    assert skipped["sample_spec"] == "the sample spec, not a model"
    assert skipped["dall-e-3"] == "no per-token prices (mode image_generation)"
    assert skipped["whisper-1"] == "no per-token prices (mode audio_transcription)"
    assert skipped["meta_llama/Llama-3.3-70B-Instruct"] == "no per-token prices (mode chat)"
    assert skipped["broken/negative-model"].startswith("invalid price")
    assert len(result.versions) + len(result.skipped) == 12
    assert result.skip_reasons()["no per-token prices (mode chat)"] == 1


def test_provider_filter() -> None:
    result = parse_litellm(load_litellm_file(SAMPLE), effective_from=WHEN, provider="openai")
    assert sorted(v.model for v in result.versions) == [
        "openai/gpt-4o-mini",
        "openai/o4-mini",
        "openai/text-embedding-3-small",
    ]
    assert result.skip_reasons()["provider is not openai"] == 6  # + dall-e-3, whisper-1
    vertex = parse_litellm(load_litellm_file(SAMPLE), effective_from=WHEN, provider="vertex_ai")
    assert [v.model for v in vertex.versions] == ["vertex_ai/gemini-2.5-pro"]


def test_effective_from_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_litellm({}, effective_from=datetime(2025, 6, 1))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1.5e-07, "0.15"),
        (1e-05, "10"),
        (2.5e-06, "2.5"),
        (0.0, "0"),
        (3, "3000000"),
        (D("1.25E-7"), "0.125"),
        ("0.000002", "2"),
    ],
)
def test_per_mtok_is_exact(raw: object, expected: str) -> None:
    assert str(per_mtok(raw)) == expected


@pytest.mark.parametrize("raw", [-1e-6, float("nan"), float("inf"), True, None, "x"])
def test_per_mtok_refuses_non_prices(raw: object) -> None:
    with pytest.raises(ValueError):
        per_mtok(raw)


def test_model_ids() -> None:
    assert model_id("gpt-4o", "openai") == "openai/gpt-4o"
    assert model_id("gemini/gemini-2.5-flash", "gemini") == "gemini/gemini-2.5-flash"
    assert model_id("orphan", None) == "orphan"


def test_unchanged_prices_are_not_new_versions() -> None:
    result = parse_litellm(load_litellm_file(SAMPLE), effective_from=WHEN, provider="openai")
    old = {v.model: v for v in result.versions}["openai/gpt-4o-mini"]
    dearer = PriceVersion(
        id=1,
        model="openai/o4-mini",
        provider="openai",
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
        input_per_mtok=D("9"),
        cached_input_per_mtok=None,
        cache_write_per_mtok=None,
        output_per_mtok=D("9"),
    )
    same = PriceVersion(
        id=2,
        model=old.model,
        provider="openai",
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
        input_per_mtok=D("0.150"),  # equal value, other spelling
        cached_input_per_mtok=D("0.075"),
        cache_write_per_mtok=None,
        output_per_mtok=D("0.60"),
    )
    changed, unchanged = drop_unchanged(result.versions, Catalog([dearer, same]))
    assert [v.model for v in unchanged] == ["openai/gpt-4o-mini"]
    assert sorted(v.model for v in changed) == ["openai/o4-mini", "openai/text-embedding-3-small"]


def test_cli_dry_run_reports_and_writes_nothing() -> None:
    from meterline.cli import app

    result = CliRunner().invoke(
        app,
        [
            "pricing",
            "import",
            str(SAMPLE),
            "--dry-run",
            "--effective-from",
            "2025-06-01T00:00:00Z",
        ],
        env={"METERLINE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert result.exit_code == 0, result.output
    assert "would import 7 price versions; skipped 5" in result.output
    assert "no per-token prices (mode image_generation)" in result.output
    assert "openai/gpt-4o-mini: in 0.15 out 0.6 /Mtok" in result.output


def test_cli_refuses_a_time_without_offset() -> None:
    from meterline.cli import app

    result = CliRunner().invoke(
        app, ["pricing", "import", str(SAMPLE), "--dry-run", "--effective-from", "2025-06-01"]
    )
    assert result.exit_code == 2  # a bad flag is a usage error
