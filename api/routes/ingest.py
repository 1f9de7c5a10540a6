"""HTTP ingest: usage events in any supported shape, validated together, published to Kafka."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from api.deps import AuthedKey, Principal, SettingsDep, forbid_other_account, get_publisher
from api.errors import RETRY_AFTER_S, Problem
from producers.adapters import to_event
from producers.errors import AdapterError
from producers.keeper import PublisherKeeper
from schemas.api_common import ProblemOut
from schemas.api_credits import IngestAccepted
from schemas.bounds import Text
from schemas.event import UsageEvent

router = APIRouter(prefix="/api/v1/usage", tags=["ingest"])

MAX_EVENTS = 1000
_EXAMPLE_EVENT = {
    "event_id": "req-9f2c",
    "source": "proxy-eu",
    "account_id": "acct-42",
    "occurred_at": "2025-03-01T12:00:00Z",
    "model": "openai/gpt-4o-mini",
    "input_tokens": 1200,
    "output_tokens": 300,
}
_EXAMPLE_OPENAI = {
    "account_id": "acct-42",
    "event_id": "req-9f2d",
    "occurred_at": "2025-03-01T12:00:01Z",
    "model": "openai/gpt-4o",
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "prompt_tokens_details": {"cached_tokens": 1024},
    },
}
_BODY_SCHEMA: dict[str, Any] = {
    "description": (
        "One event or a list of up to 1000, each in any supported shape: the canonical usage "
        "event, an OpenAI or Anthropic usage/response envelope, a LiteLLM "
        "StandardLoggingPayload, or a CloudEvent. An event without account_id is the "
        "calling key's account (or the admin's ?account_id=)."
    ),
    "anyOf": [
        {"type": "object"},
        {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": MAX_EVENTS},
    ],
}
EventsBody = Annotated[
    Any,
    Body(
        openapi_examples={
            "one event": {"value": _EXAMPLE_EVENT},
            "a batch in mixed shapes": {"value": [_EXAMPLE_EVENT, _EXAMPLE_OPENAI]},
        },
    ),
]


def _invalid(errors: list[dict[str, Any]]) -> Problem:
    parts = [f"{e['field']}: {e['message']}" for e in errors[:5]]
    more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
    return Problem(
        422,
        "validation_error",
        "invalid events, none published: " + "; ".join(parts) + more,
        errors=errors,
    )


def _validate(
    items: list[Any], *, single: bool, principal: Principal, default_account: str | None
) -> list[UsageEvent]:
    events: list[UsageEvent] = []
    errors: list[dict[str, Any]] = []
    forbidden: list[int] = []
    for i, item in enumerate(items):
        base = "body" if single else f"body.{i}"
        try:
            event = to_event(item, account_id=default_account)
        except AdapterError as exc:
            for (path, message), code in zip(exc.problems, exc.codes, strict=True):
                field = base if path in ("", "(line)") else f"{base}.{path}"
                errors.append({"index": i, "field": field, "rule": code, "message": message})
            continue
        if not principal.is_admin and event.account_id != principal.account_id:
            forbidden.append(i)
        events.append(event)
    if errors:
        raise _invalid(errors)
    if forbidden:
        raise Problem(
            403,
            "forbidden",
            f"a user key can only publish usage of its own account; event(s) at index "
            f"{', '.join(map(str, forbidden[:10]))} name another account; nothing was published",
            indexes=forbidden,
        )
    return events


@router.post(
    "/events",
    status_code=202,
    summary="Publish usage events over HTTP",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": _BODY_SCHEMA}}}},
    responses={
        503: {"model": ProblemOut, "description": "Kafka did not take the events; retry"},
    },
)
async def publish_events(
    body: EventsBody,
    principal: AuthedKey,
    request: Request,
    settings: SettingsDep,
    account_id: Annotated[
        Annotated[str, Text(128)] | None,
        Query(
            description="default account for events that name none; a user key may only "
            "give its own",
        ),
    ] = None,
) -> IngestAccepted:
    """Validate every event first; if any is invalid the answer is a 422 naming its index,
    field and rule, and nothing of the request is published. Otherwise all are published to
    usage.events (keyed by account) and acknowledged by the broker before the 202. A retry
    of the same events is safe: the ledger debits each (source, event_id) once.
    """
    forbid_other_account(principal, account_id)
    single = not isinstance(body, list)
    items = [body] if single else body
    if not items:
        raise _invalid(
            [
                {
                    "index": None,
                    "field": "body",
                    "rule": "min_items",
                    "message": "send at least one event",
                }
            ]
        )
    if len(items) > MAX_EVENTS:
        raise _invalid(
            [
                {
                    "index": None,
                    "field": "body",
                    "rule": "max_items",
                    "message": f"at most {MAX_EVENTS} events per request",
                }
            ]
        )
    default_account = account_id if principal.is_admin else principal.account_id
    events = _validate(items, single=single, principal=principal, default_account=default_account)
    # Validated first, so a bad request is a 422 even while Kafka is away.
    publisher = await get_publisher(request)
    keeper: PublisherKeeper = request.app.state.publisher_keeper
    try:
        # aiokafka expires unacknowledged sends after the same timeout; this is the hard bound.
        result = await asyncio.wait_for(
            publisher.publish_many(events), settings.kafka_publish_timeout_seconds + 5
        )
    except TimeoutError:
        await keeper.recycle(publisher, "no acknowledgement in time")
        raise _publish_failed(len(events), len(events), 0, "no acknowledgement in time") from None
    if result.failed:
        why = repr(result.failed[0].error)
        await keeper.recycle(publisher, why)
        raise _publish_failed(len(result.failed), len(events), result.published, why)
    return IngestAccepted(accepted=len(events))


def _publish_failed(failed: int, total: int, published: int, why: str) -> Problem:
    return Problem(
        503,
        "publish_failed",
        f"{failed} of {total} events were not delivered to Kafka ({why}); retry the request "
        f"in {RETRY_AFTER_S} s (events are deduplicated by source and event_id)",
        headers={"Retry-After": str(RETRY_AFTER_S)},
        published=published,
        dependency="kafka",
    )
