"""Provider `usage` objects → the event's disjoint token buckets (pure, no I/O).

OpenAI (Chat Completions and Responses) counts cached tokens inside the prompt and reasoning
tokens inside the completion; Anthropic counts cache reads and writes apart from input_tokens.
The event's buckets are disjoint, so each token is priced once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from producers.errors import AdapterError
from schemas.bounds import Count

Flavour = Literal["openai", "anthropic"]

_OPENAI_KEYS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens_details",
        "output_tokens_details",
    }
)
_ANTHROPIC_KEYS = frozenset(
    {
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "server_tool_use",
        "service_tier",
    }
)
_COUNT: TypeAdapter[int] = TypeAdapter(Count)
_SHOWN_MAX = 40  # characters of a refused value quoted back in the message
_ANTHROPIC_CACHE_KEYS = ("cache_read_input_tokens", "cache_creation_input_tokens")
USAGE_KEYS = _OPENAI_KEYS | _ANTHROPIC_KEYS | {"input_tokens", "output_tokens"}


def at(path: str, key: str) -> str:
    """The dotted path of key under path ("" is the root)."""
    return f"{path}.{key}" if path else key


def count(obj: Mapping[str, Any], key: str, path: str) -> int:
    """A token count at obj[key]: absent or null is 0; otherwise what the usage event's own
    rule (schemas.bounds.Count) makes of it, so "10" is 10 here as in the event, and what the
    event refuses (negative, past 10^12, 1.5, "1e3", a boolean, NUL) is refused naming the field.
    """
    value = obj.get(key)
    if value is None:
        return 0
    try:
        return _COUNT.validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        try:
            shown = repr(value)
        except ValueError:  # an int past Python's 4300-digit str() limit
            shown = f"an integer of {value.bit_length()} bits"
        if len(shown) > _SHOWN_MAX:
            shown = f"{shown[:_SHOWN_MAX]}... ({len(shown)} characters)"
        raise AdapterError(
            at(path, key), f"{err['msg']} (value: {shown})", codes=[str(err["type"])]
        ) from None


def sub(obj: Mapping[str, Any], key: str, path: str) -> tuple[Mapping[str, Any], str]:
    """The nested object obj[key] (absent or null → {}) and its dotted path."""
    value = obj.get(key)
    where = at(path, key)
    if value is None:
        return {}, where
    if not isinstance(value, Mapping):
        raise AdapterError(where, f"must be an object, got {type(value).__name__}")
    return value, where


def flavour(usage: Mapping[str, Any]) -> Flavour:
    """Which provider shape a usage object has (bare input/output counts read the same)."""
    keys = set(usage)
    if keys & _OPENAI_KEYS:
        return "openai"
    return "anthropic"


def _web_search(usage: Mapping[str, Any], path: str) -> dict[str, int]:
    tools, where = sub(usage, "server_tool_use", path)
    n = count(tools, "web_search_requests", where)
    return {"web_search": n} if n else {}


def openai_buckets(usage: Mapping[str, Any], path: str = "usage") -> dict[str, Any]:
    """OpenAI usage → buckets: input = prompt − cached (− cache writes), output = completion.

    Chat Completions: prompt_tokens / completion_tokens with prompt_tokens_details.cached_tokens
    (and, for cache writes, prompt_tokens_details.cache_write_tokens) and
    completion_tokens_details.reasoning_tokens. Responses: input_tokens / output_tokens with
    input_tokens_details and output_tokens_details alike. Both count cached tokens and cache
    writes inside the prompt.

    LiteLLM's usage object has this shape for every provider and names Anthropic's counts too
    (cache_read_input_tokens, cache_creation_input_tokens, prompt_tokens_details.
    cache_creation_tokens). Its own transformations (Anthropic and Bedrock Converse chat,
    Vertex Gemini, streams) count them inside prompt_tokens, read as above. But an
    Anthropic-shaped usage that reaches LiteLLM's logging as a plain dict (a /v1/messages
    pass-through, a custom handler) is read by ResponseAPILoggingUtils.
    transform_response_api_usage_to_chat_usage as Responses usage: prompt_tokens becomes
    Anthropic's input_tokens, which leaves cache reads and writes out, beside them as
    cache_read_input_tokens and cache_creation_input_tokens (LiteLLM's own custom-pricing cost
    path reads those so too). When the cache counts exceed prompt_tokens and stand beside it as
    Anthropic names them, the usage can only be that convention: prompt_tokens is the
    uncached input, billed whole, and the cache counts are billed as they are. Without those
    names, cached tokens above the prompt contradict the OpenAI shape: AdapterError.
    """
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt_key, completion_key = "prompt_tokens", "completion_tokens"
        in_details, out_details = "prompt_tokens_details", "completion_tokens_details"
    elif "input_tokens" in usage or "output_tokens" in usage:
        if usage.keys() & {"cache_read_input_tokens", "cache_creation_input_tokens"}:
            raise AdapterError(
                at(path, "cache_read_input_tokens"),
                "is an Anthropic field: this usage is Anthropic-shaped, use format 'anthropic'",
            )
        prompt_key, completion_key = "input_tokens", "output_tokens"
        in_details, out_details = "input_tokens_details", "output_tokens_details"
    else:
        raise AdapterError(
            path,
            "an OpenAI usage object needs prompt_tokens/completion_tokens (Chat Completions) "
            "or input_tokens/output_tokens (Responses)",
        )
    prompt = count(usage, prompt_key, path)
    completion = count(usage, completion_key, path)
    idet, ipath = sub(usage, in_details, path)
    odet, opath = sub(usage, out_details, path)
    cached = count(idet, "cached_tokens", ipath) or count(usage, "cache_read_input_tokens", path)
    reasoning = count(odet, "reasoning_tokens", opath)
    # The same writes under LiteLLM's three names (it mirrors them): taken once, never summed.
    cache_write = (
        count(usage, "cache_creation_input_tokens", path)
        or count(idet, "cache_write_tokens", ipath)
        or count(idet, "cache_creation_tokens", ipath)
    )
    uncached = prompt - cached - cache_write
    if uncached < 0:
        if any(usage.get(k) is not None for k in _ANTHROPIC_CACHE_KEYS):
            uncached = prompt  # Anthropic's convention: prompt_tokens left the cache out
        else:
            what = f"{cached}" + (f" (+ {cache_write} cache writes)" if cache_write else "")
            raise AdapterError(
                at(ipath, "cached_tokens"),
                f"{what} exceeds {at(path, prompt_key)} ({prompt}): "
                "cached tokens are part of the prompt",
            )
    if reasoning > completion:
        raise AdapterError(
            at(opath, "reasoning_tokens"),
            f"{reasoning} exceeds {at(path, completion_key)} ({completion}): "
            "reasoning tokens are part of the completion",
        )
    return {
        "input_tokens": uncached,
        "cached_input_tokens": cached,
        "cache_write_tokens": cache_write,
        "output_tokens": completion,
        "reasoning_tokens": reasoning,
        "units": _web_search(usage, path),
    }


def anthropic_buckets(usage: Mapping[str, Any], path: str = "usage") -> dict[str, Any]:
    """Anthropic usage → buckets: input_tokens already excludes cache reads and writes."""
    if "input_tokens" not in usage and "output_tokens" not in usage:
        hint = (
            " (this looks like OpenAI usage: use format 'openai')"
            if "prompt_tokens" in usage
            else ""
        )
        raise AdapterError(
            at(path, "input_tokens"),
            f"an Anthropic usage object needs input_tokens{hint}",
        )
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        raise AdapterError(
            at(path, "prompt_tokens"),
            "is an OpenAI field: this usage is OpenAI-shaped, use format 'openai'",
        )
    cache_write = count(usage, "cache_creation_input_tokens", path)
    if usage.get("cache_creation_input_tokens") is None:
        # Only the per-TTL breakdown was sent (the total absent or null): its sum is the cache
        # write. A null total beside the breakdown once left those tokens unbilled.
        ttl, tpath = sub(usage, "cache_creation", path)
        cache_write = sum(count(ttl, k, tpath) for k in sorted(ttl) if k.endswith("_input_tokens"))
    return {
        "input_tokens": count(usage, "input_tokens", path),
        "cached_input_tokens": count(usage, "cache_read_input_tokens", path),
        "cache_write_tokens": cache_write,
        "output_tokens": count(usage, "output_tokens", path),
        "reasoning_tokens": 0,
        "units": _web_search(usage, path),
    }


def buckets(usage: Mapping[str, Any], kind: Flavour, path: str = "usage") -> dict[str, Any]:
    """The buckets of a usage object of the given provider shape."""
    if kind == "openai":
        return openai_buckets(usage, path)
    return anthropic_buckets(usage, path)
