"""GET /credits/balance reads its key, account_id and `at` itself (api.query): the same answers,
in the same order, and the same OpenAPI entries as the routes FastAPI solves."""

from __future__ import annotations

import httpx

from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth

BALANCE = "/api/v1/credits/balance"


def _fields(problem: dict[str, object]) -> set[tuple[str, str]]:
    errors = problem["errors"]
    assert isinstance(errors, list)
    return {(e["field"], e["rule"]) for e in errors}


async def test_no_key_is_401_before_any_bad_parameter(client: httpx.AsyncClient) -> None:
    r = await client.get(BALANCE, params={"account_id": "a\x00", "at": "yesterday"})
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_every_bad_parameter_is_named_at_once(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory, admin_key: str
) -> None:
    key = await user_key_for("acme")
    r = await client.get(BALANCE, params={"account_id": "", "at": "yesterday"}, headers=auth(key))
    problem = assert_problem(r, 422, "validation_error")
    assert _fields(problem) == {
        ("query.account_id", "string_too_short"),
        ("query.at", "datetime_from_date_parsing"),
    }
    # A good account and a bad `at`: only `at`; an admin key that names no account: missing.
    r = await client.get(BALANCE, params={"at": "2026-13-01T00:00:00Z"}, headers=auth(key))
    assert {f for f, _ in _fields(assert_problem(r, 422))} == {"query.at"}
    r = await client.get(BALANCE, params={"at": "yesterday"}, headers=auth(admin_key))
    assert _fields(assert_problem(r, 422)) == {("query.account_id", "missing")}


async def test_another_account_is_403_whatever_at_says(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("alice")
    await user_key_for("bob")
    r = await client.get(
        BALANCE, params={"account_id": "bob", "at": "yesterday"}, headers=auth(key)
    )
    assert_problem(r, 403, "forbidden")
    r = await client.get(BALANCE, params={"account_id": "bob"}, headers=auth(key))
    assert_problem(r, 403, "forbidden")
    # A repeated parameter counts by its last value, as FastAPI reads one.
    r = await client.get(
        BALANCE, params=[("account_id", "bob"), ("account_id", "alice")], headers=auth(key)
    )
    assert r.status_code == 200 and r.json()["account_id"] == "alice"


async def test_openapi_documents_both_parameters_as_the_other_routes_do(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    balance = {p["name"]: p for p in paths[BALANCE]["get"]["parameters"]}
    grants = {p["name"]: p for p in paths["/api/v1/credits/grants"]["get"]["parameters"]}
    assert set(balance) == {"account_id", "at"}
    # account_id exactly as FastAPI documents it on a route that depends on TargetAccount.
    assert balance["account_id"] == grants["account_id"]
    schema = balance["account_id"]["schema"]["anyOf"][0]
    assert (schema["minLength"], schema["maxLength"]) == (1, 128)
    assert balance["at"]["in"] == "query" and balance["at"]["required"] is False
    assert balance["at"]["schema"]["anyOf"][0] == {"type": "string", "format": "date-time"}
