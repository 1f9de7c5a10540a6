"""LiteLLM's StandardLoggingPayload (`kwargs["standard_logging_object"]`) → event fields.

Mapping (see litellm/types/utils.py, StandardLoggingPayload):

- event_id      ← ``id``: the provider response's id (``chatcmpl-…``, ``msg_…``), which LiteLLM
  puts there when the response has one, else LiteLLM's ``litellm_call_id``
  (litellm_logging.get_standard_logging_object_payload); source defaults to ``"litellm"``.
  A client may choose the call id (``x-litellm-call-id``), so it is not the key when the
  provider gives one.
- account_id    ← the field chosen by ``account_field``. The default is
  ``user_api_key_user_id``: the owner of the virtual key that authenticated the call, set by the
  proxy from the key. ``end_user`` is what the client wrote in the request's ``user`` field, so
  a caller could name anybody; choose it only when the proxy sets it. A name without a dot is
  looked up on the payload, then in ``metadata`` (``end_user``, ``user_api_key_team_id``,
  ``user_api_key_org_id``, ``user_api_key_end_user_id``…); a dotted name is a path from the
  payload's root (``metadata.requester_metadata.account``). A tuple of names is tried in order.
  A missing account is an error, never a guess.
- occurred_at   ← ``startTime`` (epoch seconds): the price in force when the call was made.
- model, provider ← ``model``, ``custom_llm_provider``.
- token buckets ← the usage object in ``metadata.usage_object``, ``hidden_params.usage_object``
  or ``response.usage`` (OpenAI-shaped, with cache reads in prompt_tokens_details and, for
  Anthropic models, cache writes in cache_creation_input_tokens; read by
  producers.usage.openai_buckets, which says how it tells LiteLLM's two conventions for
  prompt_tokens apart; an Anthropic-shaped usage as Anthropic's); else the top-level
  ``prompt_tokens`` / ``completion_tokens`` with no cache breakdown.
- reported_cost ← ``response_cost`` as a decimal string (reconciliation only).
- metadata      ← trace_id, api_key_id (the key's hash), team, model_group, end_user, tags.
- A payload with ``status: "failure"`` carries no billable usage and is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from producers.errors import AdapterError
from producers.fields import decimal_text, epoch, fit_metadata, text
from producers.usage import buckets, flavour, openai_buckets, sub

DEFAULT_ACCOUNT_FIELD = "user_api_key_user_id"
MARKERS = frozenset({"call_type", "startTime", "hidden_params", "model_map_information"})


def _lookup(payload: Mapping[str, Any], name: str) -> tuple[Any, str]:
    if "." in name:
        node: Any = payload
        for part in name.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node, name
    if payload.get(name) is not None:
        return payload[name], name
    meta = payload.get("metadata")
    if isinstance(meta, Mapping) and meta.get(name) is not None:
        return meta[name], f"metadata.{name}"
    return None, name if name == "end_user" else f"metadata.{name}"


def account(payload: Mapping[str, Any], account_field: str | Sequence[str]) -> str:
    """The account named by account_field (or the first present of several)."""
    names = [account_field] if isinstance(account_field, str) else list(account_field)
    tried: list[str] = []
    for name in names:
        value, where = _lookup(payload, name)
        if value not in (None, ""):
            return text(value, where)
        tried.append(where)
    raise AdapterError(
        tried[0],
        f"is missing: it names the account that pays (tried {', '.join(tried)}); "
        "pick the field that identifies your customer with account_field=",
    )


def _usage(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str] | None:
    meta, _ = sub(payload, "metadata", "")
    hidden, _ = sub(payload, "hidden_params", "")
    response = payload.get("response")
    candidates: list[tuple[Any, str]] = [
        (meta.get("usage_object"), "metadata.usage_object"),
        (hidden.get("usage_object"), "hidden_params.usage_object"),
        (response.get("usage") if isinstance(response, Mapping) else None, "response.usage"),
    ]
    for usage, path in candidates:
        if isinstance(usage, Mapping) and usage:
            return usage, path
    return None


def litellm_fields(
    payload: Mapping[str, Any], account_field: str | Sequence[str]
) -> dict[str, Any]:
    """The event fields of one StandardLoggingPayload (not yet validated)."""
    if payload.get("status") == "failure":
        raise AdapterError(
            "status", "is 'failure': a failed call carries no billable usage; send successes only"
        )
    if payload.get("id") in (None, ""):
        raise AdapterError("id", "is required: the call's id (LiteLLM's) becomes the event_id")
    found = _usage(payload)
    if found is not None:
        usage, where = found
        # LiteLLM's own usage object is OpenAI-shaped; Anthropic's, as a /v1/messages answer
        # leaves it in response.usage, is read as Anthropic's (input_tokens excludes the cache).
        bucket = buckets(usage, flavour(usage), where)
    else:
        bucket = openai_buckets(
            {k: payload.get(k) for k in ("prompt_tokens", "completion_tokens")}, ""
        )
    fields: dict[str, Any] = {
        "event_id": text(payload["id"], "id"),
        "account_id": account(payload, account_field),
        **bucket,
    }
    if payload.get("startTime") is not None:
        fields["occurred_at"] = epoch(payload["startTime"], "startTime")
    if payload.get("model"):
        fields["model"] = text(payload["model"], "model")
    if payload.get("custom_llm_provider"):
        fields["provider"] = text(payload["custom_llm_provider"], "custom_llm_provider")
    if payload.get("response_cost") is not None:
        fields["reported_cost"] = decimal_text(payload["response_cost"], "response_cost")
    meta, _ = sub(payload, "metadata", "")
    tags = payload.get("request_tags")
    fields["metadata"] = fit_metadata(
        {
            "trace_id": payload.get("trace_id"),
            "api_key_id": meta.get("user_api_key_hash"),
            "team": meta.get("user_api_key_team_id"),
            "model_group": payload.get("model_group"),
            "end_user": payload.get("end_user"),
            "tags": [str(t)[:64] for t in tags[:20]] if isinstance(tags, list) else None,
        }
    )
    return fields
