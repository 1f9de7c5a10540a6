"""The usage event as JSON Schema, for producers outside Python: `python -m schemas.jsonschema`
rewrites schemas/usage_event.schema.json from the UsageEvent model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.bounds import METADATA_MAX_DEPTH
from schemas.event import METADATA_MAX_BYTES, SCHEMA_VERSION, UsageEvent

SCHEMA_FILE = Path(__file__).with_name("usage_event.schema.json")
SCHEMA_ID = "https://meterline.dev/schemas/usage_event.v1.schema.json"


def usage_event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of what a producer may send as a UsageEvent."""
    schema = UsageEvent.model_json_schema(mode="validation")
    props = schema["properties"]
    # What the model's validators enforce but pydantic cannot express by itself.
    props["schema_version"]["const"] = SCHEMA_VERSION
    props["reasoning_tokens"]["description"] = (
        "Part of output_tokens spent on reasoning; must be <= output_tokens."
    )
    props["output_tokens"]["description"] = "All output tokens, reasoning included."
    props["metadata"]["description"] = (
        f"At most {METADATA_MAX_BYTES} bytes as compact UTF-8 JSON: request_id, api_key_id, "
        f"team, tags. Nested at most {METADATA_MAX_DEPTH} levels; keys carry no control "
        "characters, string values none but tab, line feed and carriage return."
    )
    props["reported_cost"]["description"] = (
        "What the proxy computed, as a decimal string; kept for reconciliation only."
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def render() -> str:
    """The schema file's exact text (the model's field order, trailing newline)."""
    return json.dumps(usage_event_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    """Rewrite the checked-in schema file."""
    SCHEMA_FILE.write_text(render())
    sys.stdout.write(f"wrote {SCHEMA_FILE}\n")


if __name__ == "__main__":
    main()
