"""schemathesis over the OpenAPI document, in-process against the app with a real admin key:
no 5xx, every status documented, every body and content type as documented."""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from api.settings import ApiSettings
from tests.integration.api.conftest import auth
from tests.integration.api.credits_helpers import add_coupon, add_test_price, allocate

POSITIVE_EXAMPLES = 25
NEGATIVE_EXAMPLES = 10
ACCOUNT = "st-acct"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# The document does not depend on settings: build it once to list the operations.
SCHEMA = schemathesis.openapi.from_dict(create_app(ApiSettings()).openapi())
OPERATIONS = [r.ok() for r in SCHEMA.get_all_operations()]


def _cases(operation: Any, mode: GenerationMode, n: int) -> list[Any]:
    """n cases of the operation, drawn by hypothesis (the requests are made afterwards, async)."""
    user_route = operation.path.startswith(("/api/v1/credits", "/api/v1/usage"))
    strategy = operation.as_strategy(
        generation_mode=mode, query={"account_id": ACCOUNT} if user_route else None
    )
    drawn: list[Any] = []

    @given(case=strategy)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def draw(case: Any) -> None:
        drawn.append(case)

    try:
        draw()
    except Unsatisfiable:
        # Negative mode on an operation with nothing to make invalid (no parameters).
        assert mode is GenerationMode.NEGATIVE
    return drawn


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
async def test_openapi_operation_conforms(
    operation: Any,
    client: httpx.AsyncClient,
    api_app: FastAPI,
    db: asyncpg.Pool,
    admin_key: str,
    api_settings: ApiSettings,
) -> None:
    await add_test_price(db)
    await allocate(db, ACCOUNT, 1_000_000_000)
    await add_coupon(db, "SCHEMA", max_redemptions=1000)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for mode, n in (
        (GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
        (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES),
    ):
        for case in _cases(operation, mode, n):
            kwargs = case.as_transport_kwargs(base_url="http://meterline.test")
            headers = {**(kwargs.pop("headers", None) or {}), **auth(admin_key)}
            cookies = kwargs.pop("cookies", None)
            assert not cookies, cookies  # the API documents no cookies
            response = await client.request(headers=headers, **kwargs)
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:  # noqa: BLE001 - collect every failure, then report
                failures.append(f"{mode.value}: {case.as_curl_command()}\n{exc}")
    print(f"{operation.method.upper()} {operation.path}: {dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(failures[:3])
    assert statuses, "no case was generated"
