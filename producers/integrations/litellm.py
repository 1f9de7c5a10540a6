"""MeterlineCallback: a LiteLLM CustomLogger that holds credit before each call and meters it after.

SDK::

    litellm.callbacks = [MeterlineCallback()]         # settings from METERLINE_* or keywords

Proxy (config.yaml)::

    litellm_settings:
      callbacks: producers.integrations.litellm.proxy_handler

Before a call (the proxy's ``async_pre_call_hook``; in the SDK, ``async_pre_call_deployment_hook``,
the last hook before the provider is called, whose exception ends the call) it reserves the
worst-case cost for the paying account (holds.py). After a success, streamed or not, it
publishes one usage event built from the StandardLoggingPayload by producers.adapters, with
``reservation_id``: debiting it settles the hold. After a failure it releases the hold.
A sync SDK call (``litellm.completion``) has no hook before it that can stop it (LiteLLM runs
only async hooks there and swallows what ``log_pre_api_call`` raises), so it runs unheld; its
usage is published after it (``log_success_event``, in LiteLLM's logging thread), or spooled,
through one long-lived sink in a thread of its own (background.py), flushed at exit.
Importing this module imports LiteLLM; nothing else in meterline does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from producers.adapters import to_event
from producers.client import MeterlineClient
from producers.errors import AdapterError
from producers.integrations.background import BackgroundSink
from producers.integrations.holds import CallRefused, Hold, HoldPolicy
from producers.integrations.settings import IntegrationSettings
from producers.integrations.sink import UsageSink
from producers.integrations.spool import Spool, SpoolFull
from schemas.event import UsageEvent

__all__ = ["CallRefused", "MeterlineCallback", "proxy_handler"]

log = logging.getLogger("meterline.integrations")

HOLD_META = "meterline_hold"  # the proxy request's metadata: the hold, for the response headers
ACCOUNT_KEY = "meterline_account_id"  # where the payer decided before the call rides to the event
# account_from names → the StandardLoggingPayload fields that carry them after the call
_PAYLOAD_FIELDS = {
    "end_user": "end_user",
    "key_user": "user_api_key_user_id",
    "team": "user_api_key_team_id",
}
_MAX_TRACKED = 10_000
SYNC_WAIT_S = 30.0  # the longest a sync call's logging thread waits for its usage to be taken


def _first(*values: Any) -> str | None:
    for value in values:
        if value not in (None, ""):
            return str(value)
    return None


def _metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    params = kwargs.get("litellm_params") or {}
    for meta in (kwargs.get("metadata"), kwargs.get("litellm_metadata"), params.get("metadata")):
        if isinstance(meta, Mapping):
            return meta
    return {}


def _input_tokens(model: str, messages: Any) -> int:
    try:
        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:  # noqa: BLE001 - an unknown tokenizer must not stop the call
        return len(str(messages)) // 3 + 1  # ≥ tokens for any BPE tokenizer in practice


def _max_output(model: str, request: Mapping[str, Any], default: int) -> int:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(request.get(key), int) and request[key] > 0:
            return int(request[key])
    try:
        known = litellm.get_model_info(model).get("max_output_tokens")
    except Exception:  # noqa: BLE001 - LiteLLM raises for models it has no map of
        known = None
    return int(known) if isinstance(known, int) and known > 0 else default


def _proxy_deployment_model(name: str) -> str:
    """On the proxy, the first deployment's model behind a model group name."""
    try:
        from litellm.proxy import proxy_server

        router = proxy_server.llm_router
        for deployment in (router.get_model_list(model_name=name) if router else None) or []:
            model = (deployment.get("litellm_params") or {}).get("model")
            if model:
                return str(model)
    except Exception:  # noqa: BLE001 - not on a proxy, or no such group: price the name
        pass
    return name


class MeterlineCallback(CustomLogger):  # type: ignore[misc]
    """Holds credit before each call and publishes its usage after (see the module doc)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = IntegrationSettings.of(**settings)
        self.holds: dict[str, Hold] = {}
        self._client: MeterlineClient | None = None
        self._policy: HoldPolicy | None = None
        self._sink: UsageSink | None = None
        self._background_sink: BackgroundSink | None = None
        self._background_lock = threading.Lock()
        self.spool = Spool(self.settings.spool_path, self.settings.spool_max_bytes)

    # -- plumbing, created on first use inside the running event loop --

    def policy(self) -> HoldPolicy:
        """The hold policy over a pooled API client."""
        if self._policy is None:
            if not self.settings.api_url:
                raise CallRefused(
                    503,
                    "metering_misconfigured",
                    "MeterlineCallback needs the meterline API: set METERLINE_API_URL and "
                    "METERLINE_API_KEY (or pass api_url= and api_key=)",
                )
            self._policy = HoldPolicy(self.settings, self.client())
        return self._policy

    def client(self) -> MeterlineClient:
        """The API client (one connection pool; one quick retry on the hot path)."""
        if self._client is None:
            self._client = MeterlineClient(
                self.settings.api_url,
                self.settings.api_key,
                timeout=self.settings.api_timeout_seconds,
                retries=1,
                max_backoff=1.0,
            )
        return self._client

    def sink(self) -> UsageSink:
        """Kafka when METERLINE_KAFKA_BOOTSTRAP is set, else HTTP ingest; the spool behind."""
        if self._sink is None:
            self._sink = UsageSink(
                client=self.client() if self.settings.api_url else None,
                kafka_bootstrap=self.settings.kafka_bootstrap,
                topic=self.settings.topic_usage_events,
                dlq_topic=self.settings.topic_usage_dlq,
                spool=self.spool,
            )
        return self._sink

    async def aclose(self) -> None:
        """Publish what waits, flush, close connections (SDK users call it at exit; the sync
        path's own sink is also closed at interpreter exit without it)."""
        with self._background_lock:
            background, self._background_sink = self._background_sink, None
        if background is not None:
            await asyncio.to_thread(background.close)
        if self._sink is not None:
            await self._sink.close()
        if self._client is not None:
            await self._client.aclose()
        self._sink = self._client = self._policy = None

    # -- before the call --

    def _track(self, call_id: str, hold: Hold) -> None:
        if len(self.holds) >= _MAX_TRACKED:
            # Calls that never reported back (a client gone mid-call): their holds expire.
            horizon = time.monotonic() - self.settings.hold_ttl_seconds
            self.holds = {k: h for k, h in self.holds.items() if h.created > horizon}
        self.holds[call_id] = hold

    def _account(self, candidates: Mapping[str, Any]) -> str:
        for source in self.settings.account_from:
            found = _first(candidates.get(source))
            if found:
                return found
        raise CallRefused(
            400,
            "no_account",
            "meterline cannot tell who pays for this call: send `user`, or use a key that "
            f"belongs to a user or team (tried {', '.join(self.settings.account_from)})",
        )

    async def _hold(
        self,
        call_id: str,
        account_id: str,
        model: str,
        request: Mapping[str, Any],
        call_type: Any = None,
    ) -> None:
        policy = self.policy()
        if self.spool.pending():
            self.sink().drain_soon()  # meterline may be back: publish what waits
        if self.settings.on_unreachable == "open" and self.spool.full():
            raise CallRefused(
                503,
                "metering_backlog_full",
                "meterline has been unreachable for long enough to fill the usage spool; "
                "calls are refused until it drains",
            )
        messages = request.get("messages") or request.get("input") or request.get("prompt")
        hold = await policy.hold(
            call_id=call_id,
            account_id=account_id,
            model=model,
            input_tokens=_input_tokens(model, messages),
            output_tokens=0
            if "embedding" in str(call_type)  # embeddings produce no output tokens
            else _max_output(model, request, self.settings.default_max_output_tokens),
        )
        self._track(call_id, hold)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        """Proxy: hold credit for the call, or answer 402 / 503 with the reason."""
        from fastapi import HTTPException

        call_id = _first(data.get("litellm_call_id"))
        if call_id is None or "model" not in data:
            return data
        if call_id in self.holds:
            # A client may choose the call id (x-litellm-call-id): one hold per call in flight.
            raise HTTPException(
                status_code=409,
                detail={
                    "message": f"a call with litellm_call_id {call_id!r} is already in flight",
                    "code": "duplicate_call_id",
                },
            )
        try:
            account = self._account(
                {
                    "end_user": _first(data.get("user"), user_api_key_dict.end_user_id),
                    "key_user": user_api_key_dict.user_id,
                    "team": user_api_key_dict.team_id,
                }
            )
            model = _proxy_deployment_model(str(data["model"]))
            started = time.perf_counter()
            await self._hold(call_id, account, model, data, call_type)
        except CallRefused as refused:
            raise HTTPException(status_code=refused.status_code, detail=refused.body()) from None
        hold = self.holds[call_id]
        meta = data.get("metadata")
        if isinstance(meta, dict):  # read back by the response-headers hook
            meta[HOLD_META] = {
                "reservation_id": hold.reservation_id or "",
                "account_id": hold.account_id,
                "ms": f"{(time.perf_counter() - started) * 1000:.2f}",
            }
        return data

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, Any] | None = None,
    ) -> dict[str, str] | None:
        """Proxy: tell the client which hold its call ran under and what holding it cost."""
        meta = data.get("metadata")
        held = meta.get(HOLD_META) if isinstance(meta, dict) else None
        if not isinstance(held, dict):
            return None
        return {
            "x-meterline-account": str(held["account_id"]),
            "x-meterline-reservation-id": str(held["reservation_id"]),
            "x-meterline-hold-ms": str(held["ms"]),
        }

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """SDK: hold credit just before the provider is called; CallRefused ends the call."""
        call_id = _first(kwargs.get("litellm_call_id"))
        meta = _metadata(kwargs)
        if call_id is None or not kwargs.get("model"):
            return None
        if HOLD_META in meta or call_id in self.holds:
            return None  # held by the proxy hook, or a retry of a call already held
        account = self._account(
            {
                "end_user": _first(kwargs.get("user"), meta.get("user_api_key_end_user_id")),
                "key_user": meta.get("user_api_key_user_id"),
                "team": meta.get("user_api_key_team_id"),
            }
        )
        await self._hold(call_id, account, str(kwargs["model"]), kwargs, call_type)
        return None

    # -- after the call --

    def _event(self, payload: Mapping[str, Any], hold: Hold | None) -> UsageEvent:
        data = dict(payload)
        if hold is not None:
            data["metadata"] = {**(payload.get("metadata") or {}), ACCOUNT_KEY: hold.account_id}
            field: str | tuple[str, ...] = ACCOUNT_KEY
        else:
            field = tuple(_PAYLOAD_FIELDS[s] for s in self.settings.account_from)
        event = to_event(
            data, format="litellm", source=self.settings.source, litellm_account_field=field
        )
        if hold is None or hold.reservation_id is None:
            return event
        return UsageEvent.model_validate(
            {**event.model_dump(), "reservation_id": hold.reservation_id}
        )

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Publish the call's usage event (settling its hold), or spool it."""
        payload = kwargs.get("standard_logging_object")
        if not isinstance(payload, Mapping):
            log.error("LiteLLM gave no standard_logging_object; call %s not metered", kwargs)
            return
        call_id = _first(payload.get("litellm_call_id"), kwargs.get("litellm_call_id"))
        hold = self.holds.pop(call_id, None) if call_id else None
        if payload.get("cache_hit") is True:
            # LiteLLM answered from its cache: no provider call, nothing to bill.
            if hold is not None:
                await self.policy().release(hold)
            return
        try:
            event = self._event(payload, hold)
        except AdapterError as exc:
            await self._not_metered(self.sink(), payload, hold.account_id if hold else None, exc)
            if hold is not None:
                await self.policy().release(hold)
            return
        try:
            await self.sink().send(event)
        except SpoolFull as exc:
            log.critical("usage of call %s LOST: %s", call_id, exc)

    async def _not_metered(
        self,
        sink: UsageSink,
        payload: Mapping[str, Any],
        account: str | None,
        why: Exception,
    ) -> None:
        """A successful call whose usage cannot become an event (its usage object contradicts
        itself, nobody pays): its usage goes to usage.dlq, or the rejected file, never only
        to a log line."""
        call_id = _first(payload.get("id"), payload.get("litellm_call_id"))
        reason = f"LiteLLM call {call_id} not metered: {why}"
        try:
            await sink.dead_letter(unmetered_record(payload, account), key=account, why=reason)
        except SpoolFull as exc:
            log.critical("usage of call %s LOST: %s (%s)", call_id, why, exc)

    # -- sync SDK calls (litellm.completion): metered after the call, unheld --

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """SDK, a sync call: publish its usage (nothing could hold credit before it ran)."""
        payload = kwargs.get("standard_logging_object")
        call_id = _first(kwargs.get("litellm_call_id"))
        if not isinstance(payload, Mapping):
            log.error("LiteLLM gave no standard_logging_object; call %s not metered", call_id)
            return
        if payload.get("cache_hit") is True:
            return  # answered from LiteLLM's cache: no provider call, nothing to bill
        meta = _metadata(kwargs)
        account: str | None = None
        problem: Exception | None = None
        try:
            account = self._account(
                {
                    "end_user": _first(kwargs.get("user"), meta.get("user_api_key_end_user_id")),
                    "key_user": meta.get("user_api_key_user_id"),
                    "team": meta.get("user_api_key_team_id"),
                }
            )
            event = self._event(payload, Hold(account, None, Decimal(0), time.monotonic()))
        except (CallRefused, AdapterError) as exc:
            problem = exc
        outcome: UsageEvent | Exception = event if problem is None else problem
        try:
            background = self._background()
            done = background.run(self._deliver(background.sink, payload, account, outcome))
        except (RuntimeError, ValueError) as exc:  # closed, or nowhere to publish
            log.error("sync call %s: usage not published (%s), spooled", call_id, exc)
            try:
                if problem is None:
                    self.spool.append([event.model_dump(mode="json", exclude_none=True)])
            except SpoolFull as full:
                log.critical("usage of call %s LOST: %s", call_id, full)
            return
        try:
            asyncio.get_running_loop()
            return  # a loop runs in this thread: never block it; close() waits for the work
        except RuntimeError:
            pass
        try:
            # LiteLLM's logging thread: wait, so usage is published in step with the calls
            done.result(timeout=SYNC_WAIT_S)
        except concurrent.futures.TimeoutError:
            log.warning(
                "usage of sync call %s still being published after %ss", call_id, SYNC_WAIT_S
            )

    def _background(self) -> BackgroundSink:
        """The sync path's long-lived sink, in a thread of its own (one per process)."""
        with self._background_lock:
            if self._background_sink is None or self._background_sink.pid != os.getpid():
                self._background_sink = BackgroundSink(self.settings, self.spool)
            return self._background_sink

    async def _deliver(
        self,
        sink: UsageSink,
        payload: Mapping[str, Any],
        account: str | None,
        outcome: UsageEvent | Exception,
    ) -> None:
        """Publish one event, or dead-letter usage that cannot be one."""
        try:
            if isinstance(outcome, Exception):
                await self._not_metered(sink, payload, account, outcome)
            else:
                await sink.send(outcome)
        except SpoolFull as exc:
            log.critical("usage of call %s LOST: %s", payload.get("id"), exc)
        except Exception:  # noqa: BLE001 - nobody may wait for this result: say it here
            log.exception("usage of call %s not published", payload.get("id"))
            raise

    async def _release(self, call_id: str | None) -> None:
        hold = self.holds.pop(call_id, None) if call_id else None
        if hold is not None:
            await self.policy().release(hold)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """The call failed: free its hold."""
        await self._release(_first(kwargs.get("litellm_call_id")))

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """Proxy: the request failed (also before the model was called): free its hold."""
        await self._release(_first(request_data.get("litellm_call_id")))


_RECORD_FIELDS = (
    "id",
    "call_type",
    "model",
    "model_group",
    "custom_llm_provider",
    "startTime",
    "endTime",
    "response_cost",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "end_user",
)
_RECORD_METADATA = (
    "usage_object",
    "user_api_key_user_id",
    "user_api_key_team_id",
    "user_api_key_end_user_id",
    "user_api_key_hash",
)


def unmetered_record(payload: Mapping[str, Any], account: str | None) -> dict[str, Any]:
    """What a dead letter keeps of a call's StandardLoggingPayload: who, when, which model, and
    the usage as LiteLLM logged it (not the messages or the response text)."""
    meta = payload.get("metadata")
    hidden = payload.get("hidden_params")
    return {
        "format": "litellm",
        "account_id": account,
        "payload": {
            **{k: payload.get(k) for k in _RECORD_FIELDS if payload.get(k) is not None},
            "metadata": {k: meta.get(k) for k in _RECORD_METADATA if meta.get(k) is not None}
            if isinstance(meta, Mapping)
            else None,
            "hidden_params": {"usage_object": hidden.get("usage_object")}
            if isinstance(hidden, Mapping)
            else None,
        },
    }


proxy_handler = MeterlineCallback()
