"""Adapters: the shapes proxies already have → the canonical UsageEvent.

Formats (``detect_format`` tells them apart; ``to_event`` converts):

``event``
    The canonical event (schemas/usage_event.schema.json), as is.

``openai`` / ``anthropic`` — the JSON-lines envelope
    The provider's own object with the meterline fields beside it::

        {"account_id": "acct-42", "event_id": "req-9", "occurred_at": "2025-03-01T12:00:00Z",
         "source": "proxy-eu", "model": "openai/gpt-4o",
         "usage": {"prompt_tokens": 1200, "completion_tokens": 80,
                   "prompt_tokens_details": {"cached_tokens": 1024}}}

    Instead of ``usage`` the line may carry ``"response": {...}``, the whole provider response
    (Chat Completions, Responses or Anthropic Messages). A bare provider response with
    ``account_id`` added at its top level works too. What the envelope leaves out is taken from
    the response: ``event_id`` ← ``id`` (``chatcmpl-…``, ``resp_…``, ``msg_…``), ``model`` ←
    ``model``, ``occurred_at`` ← ``created`` / ``created_at`` (epoch seconds; Anthropic
    responses carry no time, so the envelope must). The envelope may also carry the optional
    event fields ``provider``, ``byok``, ``requests``, ``units``, ``metadata``,
    ``reported_cost`` and ``reservation_id`` (the hold the call ran under, which debiting the
    event settles); they pass through. Other keys of a response (``choices``, ``content``…)
    are ignored. A bare ``usage`` object is accepted when the caller supplies the rest as
    defaults (``to_event(usage, account_id=..., event_id=..., ...)``).

    OpenAI counts cached tokens inside the prompt and reasoning inside the completion:
    input = prompt − cached, cached_input = cached, output = completion, reasoning = reasoning.
    Anthropic's input_tokens excludes cache reads and writes: input = input_tokens,
    cached_input = cache_read_input_tokens, cache_write = cache_creation_input_tokens, and
    server_tool_use.web_search_requests becomes units.web_search.

``litellm``
    LiteLLM's StandardLoggingPayload; see producers/litellm.py for the mapping and the choice
    of account.

``cloudevents``
    A CloudEvents 1.0 structured-mode JSON envelope: ``id`` → event_id, ``source`` → source
    (a URI of more than 64 characters keeps its first 47, "~" and 16 hex digits of its SHA-256:
    CloudEvents' ``source`` + ``id`` is the event's identity, so two long sources that share
    a prefix must stay two sources), ``subject`` → account_id, ``time`` → occurred_at, and
    ``data`` the usage in the canonical shape (without those four) or in one of the provider
    shapes above. A field in ``data`` that disagrees with its envelope attribute is an error.

Defaults given to ``to_event`` fill only what the input leaves out. Every failure is an
``AdapterError`` naming the input's field and the rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal, cast

from pydantic import ValidationError

from producers import litellm
from producers.errors import AdapterError
from producers.fields import epoch, text
from producers.usage import USAGE_KEYS, Flavour, buckets, flavour
from schemas.event import SOURCE_MAX, UsageEvent

Format = Literal["event", "openai", "anthropic", "litellm", "cloudevents"]
FORMATS: Final[tuple[Format, ...]] = ("event", "openai", "anthropic", "litellm", "cloudevents")

_EVENT_FIELDS = frozenset(UsageEvent.model_fields)
# Keys only the canonical event has (a bare provider usage object has none of them).
_EVENT_ONLY = _EVENT_FIELDS - USAGE_KEYS - {"model"}
_PASSTHROUGH = (
    "source",
    "provider",
    "byok",
    "requests",
    "metadata",
    "reported_cost",
    "reservation_id",
)
_CE_ATTRS = {"id": "event_id", "source": "source", "subject": "account_id", "time": "occurred_at"}


def _mapping(obj: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise AdapterError(field, f"must be a JSON object, got {type(obj).__name__}")
    return obj


def _response_flavour(resp: Mapping[str, Any]) -> Flavour | None:
    if resp.get("type") == "message" or str(resp.get("id", "")).startswith("msg_"):
        return "anthropic"
    if resp.get("object") in ("chat.completion", "response", "text_completion"):
        return "openai"
    return None


def _provider_flavour(obj: Mapping[str, Any]) -> Flavour | None:
    """openai/anthropic when obj is an envelope, a provider response or a bare usage object."""
    resp = obj.get("response") if isinstance(obj.get("response"), Mapping) else obj
    resp = cast(Mapping[str, Any], resp)
    by_response = _response_flavour(resp)
    if by_response:
        return by_response
    for usage in (obj.get("usage"), resp.get("usage")):
        if isinstance(usage, Mapping):
            return flavour(usage)
    if set(obj) & USAGE_KEYS and not set(obj) & _EVENT_ONLY:
        return flavour(obj)
    return None


def detect_format(obj: Any) -> Format:
    """Which supported shape obj has; AdapterError when none."""
    obj = _mapping(obj, "(line)")
    if "specversion" in obj:
        return "cloudevents"
    if set(obj) & litellm.MARKERS and "usage" not in obj:
        return "litellm"
    if "usage" in obj or isinstance(obj.get("response"), Mapping):
        return _provider_flavour(obj) or "openai"
    if set(obj) & _EVENT_ONLY or "schema_version" in obj:
        return "event"
    found = _provider_flavour(obj)
    if found:
        return found
    raise AdapterError(
        "(line)",
        "unrecognised shape: expected a usage event, an OpenAI or Anthropic usage/response "
        "envelope, a LiteLLM StandardLoggingPayload or a CloudEvent",
    )


def _provider_fields(obj: Mapping[str, Any], kind: Flavour, path: str = "") -> dict[str, Any]:
    """Envelope, provider response or bare usage → event fields (not yet validated)."""
    pre = f"{path}." if path else ""
    if isinstance(obj.get("response"), Mapping):
        resp, rpath = cast(Mapping[str, Any], obj["response"]), f"{pre}response"
    else:
        resp, rpath = obj, path
    rpre = f"{rpath}." if rpath else ""
    if isinstance(obj.get("usage"), Mapping):
        usage, upath = cast(Mapping[str, Any], obj["usage"]), f"{pre}usage"
    elif isinstance(resp.get("usage"), Mapping):
        usage, upath = cast(Mapping[str, Any], resp["usage"]), f"{rpre}usage"
    elif "usage" in obj or resp is not obj:
        raise AdapterError(f"{pre}usage", "must be the provider's usage object")
    elif set(obj) & USAGE_KEYS:
        usage, upath = obj, path  # a bare usage object
    else:
        raise AdapterError(f"{pre}usage", "is missing: the provider's usage object is required")
    fields = buckets(usage, kind, upath)
    bare = usage is obj

    if obj.get("event_id") is not None:
        fields["event_id"] = text(obj["event_id"], f"{pre}event_id")
    elif not bare and resp.get("id") is not None:
        fields["event_id"] = text(resp["id"], f"{rpre}id")
    if obj.get("account_id") is not None:
        fields["account_id"] = obj["account_id"]
    if obj.get("occurred_at") is not None:
        fields["occurred_at"] = obj["occurred_at"]
    else:
        for key in ("created", "created_at"):
            if not bare and resp.get(key) is not None:
                fields["occurred_at"] = epoch(resp[key], f"{rpre}{key}")
                break
    model = obj.get("model") if obj.get("model") is not None else resp.get("model")
    if model is not None:
        fields["model"] = model
    for key in _PASSTHROUGH:
        if obj.get(key) is not None:
            fields[key] = obj[key]
    if obj.get("units") is not None:
        # Units the envelope states win over those read from the usage object.
        fields["units"] = {**fields["units"], **_mapping(obj["units"], f"{pre}units")}
    return fields


def _event_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj)


def _cloudevent_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    version = obj.get("specversion")
    if version != "1.0":
        raise AdapterError("specversion", f"must be '1.0', got {version!r}")
    if "data_base64" in obj:
        raise AdapterError("data_base64", "binary data is not supported: send JSON in data")
    data = _mapping(obj.get("data"), "data")
    kind = _provider_flavour(data) if ("usage" in data or "response" in data) else None
    if kind is None and not set(data) & _EVENT_ONLY and set(data) & USAGE_KEYS:
        kind = flavour(data)
    fields = _provider_fields(data, kind, "data") if kind else _event_fields(data)
    for attr, field in _CE_ATTRS.items():
        value = obj.get(attr)
        if value is None:
            continue
        value = text(value, attr)
        if field == "source":
            value = fit_source(value)
        if field in data and data[field] != value:
            raise AdapterError(
                f"data.{field}", f"is {data[field]!r} but the CloudEvent's {attr} is {value!r}"
            )
        fields[field] = value
    return fields


def fit_source(source: str) -> str:
    """A CloudEvent's source within SOURCE_MAX characters, distinct for distinct sources.

    Cutting it to 64 characters made two sources that share their first 64 one source, so
    their events with the same id were one idempotency key: the second was recorded as a
    duplicate of the first and never debited.
    """
    if len(source) <= SOURCE_MAX:
        return source
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{source[: SOURCE_MAX - 17]}~{digest}"


def to_event(
    obj: Any,
    *,
    format: str = "auto",
    account_id: str | None = None,
    event_id: str | None = None,
    source: str | None = None,
    occurred_at: datetime | str | None = None,
    model: str | None = None,
    provider: str | None = None,
    byok: bool | None = None,
    litellm_account_field: str | Sequence[str] = litellm.DEFAULT_ACCOUNT_FIELD,
) -> UsageEvent:
    """One input object in any supported format → a validated UsageEvent.

    The keyword defaults fill only the fields the input leaves out.
    """
    obj = _mapping(obj, "(line)")
    if format == "auto":
        fmt: str = detect_format(obj)
    elif format in FORMATS:
        fmt = format
    else:
        raise AdapterError("format", f"must be auto or one of {', '.join(FORMATS)}; got {format!r}")

    if fmt == "event":
        fields = _event_fields(obj)
    elif fmt in ("openai", "anthropic"):
        fields = _provider_fields(obj, cast(Flavour, fmt))
    elif fmt == "litellm":
        fields = litellm.litellm_fields(obj, litellm_account_field)
    else:
        fields = _cloudevent_fields(obj)

    defaults = {
        "account_id": account_id,
        "event_id": event_id,
        "source": source or ("litellm" if fmt == "litellm" else None),
        "occurred_at": occurred_at,
        "model": model,
        "provider": provider,
        "byok": byok,
    }
    for key, value in defaults.items():
        if value is not None and fields.get(key) is None:
            fields[key] = value
    if not fields.get("units"):
        fields.pop("units", None)
    try:
        return UsageEvent.model_validate(fields)
    except ValidationError as exc:
        error = AdapterError.from_validation(exc)
        if fmt == "cloudevents":
            error = _cloudevent_paths(error, obj)
        raise error from None


def _cloudevent_paths(error: AdapterError, obj: Mapping[str, Any]) -> AdapterError:
    """A CloudEvent's errors named by its own fields: `time`, not occurred_at; `data.model`,
    not model (a sender looking for `occurred_at` in its CloudEvent finds nothing)."""
    attr_of = {field: attr for attr, field in _CE_ATTRS.items()}
    data = obj.get("data")
    in_data = set(data) if isinstance(data, Mapping) else set()
    problems: list[tuple[str, str]] = []
    for path, rule in error.problems:
        head, dot, rest = path.partition(".")
        if head in attr_of and (obj.get(attr_of[head]) is not None or head not in in_data):
            path = attr_of[head] + dot + rest  # the attribute gave it, or should have
        elif head != "event":
            path = f"data.{path}"
        problems.append((path, rule))
    return AdapterError(problems[0][0], problems[0][1], problems=problems, codes=error.codes)
