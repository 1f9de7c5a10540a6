"""A METERLINE_* variable that no part of meterline reads is named at start, with the setting
that was likely meant; and every variable the documentation names is one meterline reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from meterline.cli import known_variables
from schemas.settings import unknown_variables

ROOT = Path(__file__).resolve().parents[3]


def test_a_misspelt_setting_is_named_with_what_was_meant(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    env |= {
        "METERLINE_HOME": str(tmp_path),
        "METERLINE_KAFKA_BOOTSTRAPS": "kafka:9092",
        "METERLINE_USAGE_TOPIC": "prod.usage",
        "METERLINE_LITELLM_ONUNREACHABLE": "closed",
        "METERLINE_TOPIC_USAGE_EVENTS": "fine",
    }
    r = subprocess.run(
        [sys.executable, "-m", "meterline", "dev", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    err = r.stderr
    assert (
        "METERLINE_KAFKA_BOOTSTRAPS is not a meterline setting "
        "(did you mean METERLINE_KAFKA_BOOTSTRAP?)" in err
    )
    assert "METERLINE_USAGE_TOPIC is not a meterline setting (did you mean " in err
    assert "METERLINE_TOPIC_USAGE_EVENTS?" in err.split("METERLINE_USAGE_TOPIC", 1)[1]
    assert "(did you mean METERLINE_LITELLM_ON_UNREACHABLE?)" in err
    assert "METERLINE_TOPIC_USAGE_EVENTS is not" not in err
    assert "METERLINE_HOME is not" not in err


def test_settings_with_an_alias_are_known_by_their_variable_only() -> None:
    known = known_variables()
    assert "METERLINE_LITELLM_SOURCE" in known
    assert "METERLINE_SOURCE" not in known
    assert "METERLINE_STACK_KAFKA_PORT" in known
    assert unknown_variables({"METERLINE_SOURCE": "x", "PATH": "/bin"}, known) == [
        "METERLINE_SOURCE is not a meterline setting "
        "(did you mean METERLINE_LITELLM_SOURCE?); it is ignored"
    ]


def test_every_variable_the_documentation_names_is_read() -> None:
    known = known_variables()
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("*.y*ml")]
    named = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in docs
        for name, star in re.findall(r"(METERLINE_[A-Z0-9_]+)(\*?)", path.read_text())
        if not star  # METERLINE_KAFKA_SASL_*: a family, not a variable
    }
    assert named, "no METERLINE_ variable found in the docs: the scan is broken"
    unknown = sorted((path, name) for path, name in named if name not in known)
    assert not unknown, f"documented but read by nothing: {unknown}"
