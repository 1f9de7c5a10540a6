"""Operations routes: liveness, readiness against the real services, metrics."""

from __future__ import annotations

import httpx

from tests.integration.api.conftest import assert_problem, auth


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_with_services_up(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "kafka": "ok", "publisher": "ok"},
    }


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    await client.get("/no/such/route")
    r = await client.get("/metrics")
    assert r.status_code == 200
    text = r.text
    assert 'meterline_api_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "meterline_api_request_seconds_bucket" in text
    assert 'meterline_api_errors_total{class="4xx",route="<unmatched>"}' in text


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert "/api/v1/nothing-here" in body["detail"]


async def test_openapi_documents_problem_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    errors = [
        resp
        for ops in r.json()["paths"].values()
        for op in ops.values()
        for code, resp in op["responses"].items()
        if code[0] in "45"
    ]
    documented = [set(resp["content"]) for resp in errors if resp.get("content")]
    assert len(documented) > 100  # 401, 403, 422, ... of every route
    assert all(media == {"application/problem+json"} for media in documented)
    assert (await client.get("/docs")).status_code == 200


async def test_metrics_label_path_routes_by_template(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    await client.get("/api/v1/admin/accounts/some-account-123", headers=auth(admin_key))
    text = (await client.get("/metrics")).text
    # The account routes take the rest of the path (ids may hold "/"): the template says so.
    assert 'route="/api/v1/admin/accounts/{account_id:account_id}",status="404"' in text
    assert "some-account-123" not in text
