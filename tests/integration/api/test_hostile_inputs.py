"""Every route of the OpenAPI document under hostile input: control characters in each string
(body fields at any depth, path and query parameters), timestamps Python or Postgres cannot
represent, numbers beyond BIGINT. Each answer is a 4xx problem (never a 5xx) and nothing is
stored; a control character is a 422 naming the field and the rule."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.integration.api.conftest import assert_problem, auth
from tests.integration.api.credits_helpers import MODEL, add_coupon, add_test_price, allocate

CONTROLS = ["\x00", "\x1b", "\x7f", "\x85"]
EXTREME_TIMES = [
    "0001-01-01T00:00:00+05:00",  # UTC would be year 0
    "9999-12-31T23:59:59-05:00",  # UTC would be year 10000
    "0001-01-01T00:00:00Z",  # asyncpg writes it as -infinity
    "9999-12-31T23:59:59.999999Z",  # and this as infinity
]
EXTREME_DAYS = ["0001-01-01", "9999-12-31"]
HUGE_NUMBERS: list[Any] = [10**30, -(10**30), "1e400", 2**63]
ACCOUNT = "alice"
# The OpenAPI examples do not name a path parameter; these do, for the happy request.
PATH_VALUES = {"account_id": ACCOUNT, "model": MODEL, "key_id": "nokey", "tier": "pro"}

Route = tuple[str, str]  # (method, OpenAPI path)


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def _example(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A valid-looking value of a schema: its own example, else one built from its parts."""
    schema = _resolve(doc, schema)
    if schema.get("examples"):
        return copy.deepcopy(schema["examples"][0])
    if "anyOf" in schema:
        return _example(doc, next(s for s in schema["anyOf"] if s.get("type") != "null"))
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {
            name: _example(doc, sub)
            for name, sub in schema.get("properties", {}).items()
            if name in schema.get("required", [])
        }
    if kind == "array":
        return [_example(doc, schema.get("items", {}))]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return "2030-01-01T00:00:00Z"
    if "enum" in schema:
        return schema["enum"][0]
    return "x"


def _body(doc: dict[str, Any], op: dict[str, Any]) -> Any:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    examples = content.get("examples")
    if examples:
        return copy.deepcopy(next(iter(examples.values()))["value"])
    return _example(doc, content.get("schema", {}))


def _routes(app: FastAPI) -> list[tuple[Route, dict[str, Any]]]:
    doc = app.openapi()
    return [
        ((method.upper(), path), op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if path.startswith("/api/")
    ]


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every string in a JSON value (keys of objects included as values' parents)."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _string_leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _string_leaves(v, (*path, i))


def _with(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return out


def _url(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", quote(value, safe="/" if name == "model" else ""))
    return path


async def _counts(db: asyncpg.Pool) -> dict[str, int]:
    """Rows per table: a hostile request must leave every count as it was."""
    tables = [
        r["tablename"]
        for r in await db.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename <> 'schema_migrations' ORDER BY 1"
        )
    ]
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM \"{t}\"" for t in tables)
    return {r["t"]: r["n"] for r in await db.fetch(sql)}


@pytest.fixture
async def world(db: asyncpg.Pool) -> None:
    await add_test_price(db)
    await add_coupon(db, "FREE")
    await allocate(db, ACCOUNT, 10_000_000)


def _hostile_cases(
    doc: dict[str, Any], op: dict[str, Any], path: str
) -> Iterator[tuple[str, dict[str, str], dict[str, str], Any, str | None]]:
    """(what, path values, query, body, the field a 422 must name or None) of each attack."""
    body = _body(doc, op)
    params = op.get("parameters", [])
    query = {"account_id": ACCOUNT} if any(p["name"] == "account_id" for p in params) else {}
    query = {
        k: v
        for k, v in query.items()
        if not any(p["name"] == k and p["in"] == "path" for p in params)
    }
    for p in params:
        name, where = p["name"], p["in"]
        schema = _resolve(doc, p.get("schema", {}))
        fmt = {s.get("format") for s in [schema, *schema.get("anyOf", [])]}
        base_values = {**PATH_VALUES}
        if where == "path":
            for bad in CONTROLS:
                yield (
                    f"path {name} {bad!r}",
                    {**base_values, name: f"a{bad}b"},
                    query,
                    body,
                    f"path.{name}",
                )
        elif where == "query":
            for bad in CONTROLS:
                yield (
                    f"query {name} {bad!r}",
                    base_values,
                    {**query, name: f"a{bad}b"},
                    body,
                    f"query.{name}",
                )
            if "date-time" in fmt:
                for t in EXTREME_TIMES:
                    yield (
                        f"query {name}={t}",
                        base_values,
                        {**query, name: t},
                        body,
                        f"query.{name}",
                    )
            if "date" in fmt:
                for d in EXTREME_DAYS:
                    yield (
                        f"query {name}={d}",
                        base_values,
                        {**query, name: d},
                        body,
                        f"query.{name}",
                    )
    if body is None:
        return
    for leaf in _string_leaves(body):
        dotted = ".".join(map(str, leaf))
        original = _get(body, leaf)
        for bad in CONTROLS:
            yield (
                f"body {dotted} {bad!r}",
                PATH_VALUES,
                query,
                _with(body, leaf, original + bad),
                "body" + ("." + dotted if dotted else ""),
            )
        # A lone surrogate: JSON can say it, UTF-8 cannot store it.
        yield (
            f"body {dotted} surrogate",
            PATH_VALUES,
            query,
            _with(body, leaf, original + "\ud800"),
            None,
        )
        if _looks_like_time(original):
            for t in EXTREME_TIMES:
                yield (f"body {dotted}={t}", PATH_VALUES, query, _with(body, leaf, t), None)
    for parent, key in _keys(body):
        renamed = (
            _with(
                body,
                parent,
                {(k + "\x00" if k == key else k): v for k, v in _get(body, parent).items()},
            )
            if parent
            else {(k + "\x00" if k == key else k): v for k, v in body.items()}
        )
        yield (f"body key {key!r}", PATH_VALUES, query, renamed, None)
    for leaf in _number_leaves(body):
        for n in HUGE_NUMBERS:
            dotted = ".".join(map(str, leaf))
            yield (f"body {dotted}={n}", PATH_VALUES, query, _with(body, leaf, n), None)


def _keys(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path of an object, one of its keys) for every object in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, k
            yield from _keys(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _keys(v, (*path, i))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _looks_like_time(value: str) -> bool:
    return len(value) >= 20 and value[4] == "-" and value[10] == "T"


def _number_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _number_leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _number_leaves(v, (*path, i))


async def test_every_route_refuses_hostile_input_with_a_4xx_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, api_app: FastAPI, world: None
) -> None:
    doc = api_app.openapi()
    routes = _routes(api_app)
    assert len(routes) >= 30, [r for r, _ in routes]
    tried: dict[Route, int] = {}
    failures: list[str] = []
    for (method, path), op in routes:
        for what, path_values, query, body, field in _hostile_cases(doc, op, path):
            before = await _counts(db)
            content = None if body is None else json.dumps(body).encode()
            r = await client.request(
                method,
                _url(path, path_values),
                params=query,
                content=content,
                headers={**auth(admin_key), "content-type": "application/json"},
            )
            tried[(method, path)] = tried.get((method, path), 0) + 1
            where = f"{method} {path} [{what}] -> {r.status_code} {r.text[:300]}"
            if r.status_code >= 500 or r.status_code < 400:
                failures.append(where)
                continue
            assert r.headers["content-type"].startswith("application/problem+json"), where
            after = await _counts(db)
            if after != before:
                changed = {t: (before[t], after[t]) for t in after if after[t] != before.get(t)}
                failures.append(f"{where} stored {changed}")
            if field is not None:
                problem = r.json()
                if r.status_code != 422 or not any(
                    e["field"] == field or e["field"].startswith(field + ".")
                    for e in problem.get("errors", [])
                ):
                    failures.append(f"{where}: not a 422 naming {field}")
    print(sum(tried.values()), "attacks on", len(tried), "routes")
    assert not failures, "\n".join(failures)
    # Every route with a parameter or a body met at least one attack.
    untouched = [
        route
        for route, op in routes
        if (op.get("parameters") or op.get("requestBody")) and route not in tried
    ]
    assert not untouched, untouched


async def test_the_control_character_answer_names_the_field_and_the_rule(
    client: httpx.AsyncClient, admin_key: str, world: None
) -> None:
    r = await client.post(
        "/api/v1/credits/deduct",
        params={"account_id": ACCOUNT},
        json={"amount": "1", "reason": "refund\x00", "idempotency_key": "k1"},
        headers=auth(admin_key),
    )
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"] == [
        {
            "field": "body.reason",
            "rule": "control_character",
            "message": problem["errors"][0]["message"],
        }
    ]
    assert "U+0000 at position 6" in problem["errors"][0]["message"]
    assert "body.reason" in problem["detail"] and "control_character" in problem["detail"]
