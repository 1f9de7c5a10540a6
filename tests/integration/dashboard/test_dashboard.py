"""The dashboard in a real browser: what a person sees equals what the API answers."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from api.routes.dashboard import CONTENT_SECURITY_POLICY
from schemas.money import format_micros
from tests.integration.dashboard.conftest import (
    OTHER,
    RANGE_DAYS,
    THIRD,
    USER,
    Stack,
    record_screenshot,
)

PAGE_SIZE = 15  # rows per transactions page (main.js)


class Session:
    """One browser tab on the dashboard, recording every request and console error."""

    def __init__(self, page: Page, stack: Stack) -> None:
        self.page = page
        self.stack = stack
        self.urls: list[str] = []
        self.responses: list[tuple[str, int]] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("response", self._response)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on(
            "console",
            lambda m: (
                None
                if m.type != "error" or "Failed to load" in m.text
                else self.errors.append(m.text)
            ),
        )

    def _response(self, response: Any) -> None:
        self.responses.append((response.url, response.status))
        # 4xx answers are part of the page's flow (the scope probe, refusals): each test checks
        # the ones it expects; a 5xx never is.
        if response.status >= 500:
            self.errors.append(f"{response.status} {response.url}")

    async def open(self, path: str = "/dashboard") -> None:
        response = await self.page.goto(self.stack.base_url + path)
        assert response is not None and response.status == 200

    async def settled(self) -> None:
        """Wait until the page has finished loading what it asked for."""
        # A selector, not a JS predicate: the page's CSP forbids the eval a predicate needs.
        await self.page.wait_for_selector("body[aria-busy='false']", state="attached")

    async def sign_in(self, key: str) -> None:
        await self.page.fill("#api-key", key)
        await self.page.press("#api-key", "Enter")  # the keyboard is enough
        await self.settled()

    async def text(self, selector: str) -> str:
        return (await self.page.inner_text(selector)).strip()

    async def amount(self, selector: str) -> Decimal:
        """The amount a person reads (thousands separators dropped), as an exact Decimal."""
        return Decimal((await self.text(selector)).replace(",", ""))

    async def visible(self, selector: str) -> bool:
        return await self.page.is_visible(selector)

    async def shot(self, directory: Path, name: str) -> None:
        path = directory / f"dashboard-{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        record_screenshot(path)

    def key_never_in_an_address(self, key: str) -> None:
        assert self.urls, "the page made no request"
        assert not [u for u in self.urls if key in u]


@pytest.fixture
async def tab(browser: Browser, stack: Stack) -> AsyncIterator[Session]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    session = Session(page, stack)
    try:
        yield session
    finally:
        assert not session.errors, session.errors
        await context.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


async def api_get(stack: Stack, key: str, path: str, **params: Any) -> Any:
    async with stack.client(key) as c:
        r = await c.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


async def test_the_page_is_served_with_a_strict_policy(tab: Session) -> None:
    response = await tab.page.goto(tab.stack.base_url + "/dashboard")
    assert response is not None and response.status == 200
    headers = await response.all_headers()
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert headers["cache-control"] == "no-store"
    html = await response.text()
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    # The charting library is ours to serve, with its licence; nothing comes from elsewhere.
    assert await tab.page.evaluate("typeof window.Chart.getChart") == "function"
    assert all(u.startswith(tab.stack.base_url) for u in tab.urls), tab.urls
    licence = await tab.page.request.get(
        tab.stack.base_url + "/dashboard/static/vendor/chart.js/LICENSE.md"
    )
    assert licence.status == 200 and "MIT License" in await licence.text()
    # Every field has a label a screen reader announces; the language is declared.
    unlabelled = await tab.page.eval_on_selector_all(
        "input", "inputs => inputs.filter(i => !i.labels.length).map(i => i.id)"
    )
    assert unlabelled == []
    assert await tab.page.get_attribute("html", "lang") == "en"
    missing = await tab.page.request.get(tab.stack.base_url + "/dashboard/static/../main.py")
    assert missing.status == 404


async def test_amounts_are_exact_decimal_text(tab: Session) -> None:
    await tab.open()
    cases = await tab.page.evaluate(
        """async () => {
          const m = await import('/dashboard/static/js/money.js');
          return [
            m.formatCredits('0.000001'), m.formatCredits('-1234567.5'),
            m.formatCredits('999999999999.999999'), m.formatCredits('25.000000'),
            m.formatCredits('0.1', 0), m.toMicros('0.1').toString(),
            m.perMilleText(m.perMille(m.toMicros('0.3'), m.toMicros('0.9'))),
            m.perMilleText(m.perMille(m.toMicros('45'), m.toMicros('40'))),
          ];
        }"""
    )
    assert cases == [
        "0.000001",
        "-1,234,567.50",
        "999,999,999,999.999999",
        "25.00",
        "0.1",
        "100000",
        "33.3",
        "112.5",
    ]


async def test_a_user_key_shows_its_account_as_the_api_answers_it(
    tab: Session, stack: Stack, screenshots: Path
) -> None:
    key = stack.keys[USER]
    await tab.open()
    await tab.sign_in(key)
    assert await tab.visible("#account") and not await tab.visible("#admin")
    assert await tab.text("#account-id") == USER

    balance = await api_get(stack, key, "/api/v1/credits/balance")
    assert await tab.amount("#balance") == Decimal(balance["balance"])
    assert await tab.amount("#monthly-spend") == Decimal(balance["monthly_spend"])
    assert Decimal(balance["balance"]) < Decimal("100")  # the worker's debits are in it
    # Holds and grants (issue 10): available = balance - held, the grants as the API lists them.
    assert await tab.amount("#available") == Decimal(balance["available"])
    assert await tab.amount("#held") == Decimal(balance["held"]) == Decimal("3")
    assert Decimal(balance["available"]) == Decimal(balance["balance"]) - 3
    grants = await api_get(stack, key, "/api/v1/credits/grants")
    shown = await tab.page.eval_on_selector_all(
        "#grants tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].dataset.value,"
        " r.cells[2].dataset.value, r.cells[4].textContent, r.cells[6].textContent])",
    )
    assert shown == [
        [
            g["category"],
            g["amount"],
            g["remaining"],
            g["status"],
            ", ".join(g["applies_to"] or []) or "any model",
        ]
        for g in grants["items"]
    ]
    promo = next(g for g in grants["items"] if g["category"] == "promotional")
    assert Decimal(promo["remaining"]) < Decimal(promo["amount"])  # burned first
    expiry = await tab.page.eval_on_selector_all(
        "#grants tbody tr", "rows => rows.map(r => r.cells[5].textContent)"
    )
    assert expiry == [
        g["expires_at"].replace("T", " ")[:16] if g["expires_at"] else "never"
        for g in grants["items"]
    ]
    cap_text = await tab.text("#cap-text")
    spend, _, rest = cap_text.partition(" of ")
    assert Decimal(spend.replace(",", "")) == Decimal(balance["monthly_spend"])
    assert rest.startswith("40.00 credits spent")
    assert "3.00 more held by reservations" in cap_text

    # The default range is the last 14 days; a person picks ten.
    assert (
        await tab.page.evaluate(
            "Chart.getChart(document.getElementById('daily-chart')).data.labels.length"
        )
        == 14
    )
    await tab.page.fill("#range-from", stack.range_from.isoformat())
    await tab.page.fill("#range-to", stack.range_to.isoformat())
    await tab.page.click("#range-form button[type=submit]")
    await tab.settled()
    # The usage chart: one bar per day of the range, each day's cost as the stats route has it.
    by_day = await api_get(
        stack,
        key,
        "/api/v1/credits/usage/stats",
        group_by="day",
        **{"from": stack.range_from.isoformat(), "to": stack.range_to.isoformat()},
    )
    assert len(by_day["groups"]) == 4  # usage on four of the ten days
    labels = await tab.page.evaluate(
        "Chart.getChart(document.getElementById('daily-chart')).data.labels.length"
    )
    assert labels == RANGE_DAYS
    rows = await tab.page.eval_on_selector_all(
        "#daily-table tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[2].dataset.value])",
    )
    assert len(rows) == RANGE_DAYS
    shown = {day: cost for day, cost in rows if cost != "0"}
    assert shown == {g["key"]: g["cost"] for g in by_day["groups"]}
    assert await tab.page.get_attribute("#usage-total", "data-value") == by_day["totals"]["cost"]

    by_model = await api_get(
        stack,
        key,
        "/api/v1/credits/usage/stats",
        group_by="model",
        **{"from": stack.range_from.isoformat(), "to": stack.range_to.isoformat()},
    )
    models = await tab.page.eval_on_selector_all(
        "#model-table tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[4].dataset.value])",
    )
    assert models == [[g["key"], g["cost"]] for g in by_model["groups"]]
    assert len(models) == 2

    await tab.page.click("#daily-table-wrap summary")
    await tab.shot(screenshots, "user")
    tab.key_never_in_an_address(key)


async def test_transactions_page_on_and_export_the_ledger(
    tab: Session, stack: Stack, screenshots: Path
) -> None:
    key = stack.keys[USER]
    await tab.open()
    await tab.sign_in(key)
    first = await api_get(stack, key, "/api/v1/credits/transactions", limit=PAGE_SIZE)
    ids = await tab.page.eval_on_selector_all(
        "#transactions tbody tr", "rows => rows.map(r => Number(r.cells[0].dataset.id))"
    )
    assert ids == [row["id"] for row in first["items"]] and len(ids) == PAGE_SIZE

    await tab.page.focus("#tx-older")  # by keyboard: a native button takes Enter
    await tab.page.keyboard.press("Enter")
    await tab.settled()
    second = await api_get(
        stack, key, "/api/v1/credits/transactions", limit=PAGE_SIZE, cursor=first["next_cursor"]
    )
    ids2 = await tab.page.eval_on_selector_all(
        "#transactions tbody tr", "rows => rows.map(r => Number(r.cells[0].dataset.id))"
    )
    assert ids2 == [row["id"] for row in second["items"]] and ids2
    assert set(ids2).isdisjoint(ids)
    amounts = await tab.page.eval_on_selector_all(
        "#transactions tbody tr td:nth-child(3)", "cells => cells.map(c => c.dataset.value)"
    )
    assert amounts == [row["amount"] for row in second["items"]]
    assert await tab.text("#tx-page") == "page 2"
    await tab.shot(screenshots, "transactions-page-2")
    await tab.page.click("#tx-newer")
    await tab.settled()
    back = await tab.page.eval_on_selector_all(
        "#transactions tbody tr", "rows => rows.map(r => Number(r.cells[0].dataset.id))"
    )
    assert back == ids

    async with tab.page.expect_download() as waiting:
        await tab.page.click("#export")
    download = await waiting.value
    assert download.suggested_filename == f"transactions-{USER}.csv"
    assert not download.url.startswith("http")  # a blob made in the page, not a keyed address
    exported = read_csv(await download.path())
    ledger = await stack.db.fetch(
        "SELECT id, type, amount_micros, balance_after_micros FROM credit_transactions"
        " WHERE account_id = $1 ORDER BY id DESC",
        USER,
    )
    assert len(ledger) >= 21  # the allocation, a grant if any, and 20 usage debits
    assert [(int(r["id"]), r["type"], r["amount"], r["balance_after"]) for r in exported] == [
        (
            r["id"],
            r["type"],
            format_micros(r["amount_micros"]),
            format_micros(r["balance_after_micros"]),
        )
        for r in ledger
    ]
    tab.key_never_in_an_address(key)


async def test_a_wrong_key_gets_a_clear_message_and_nothing_else(
    tab: Session, screenshots: Path
) -> None:
    await tab.open()
    await tab.sign_in("ml_this-key-does-not-exist")
    message = await tab.text("#message")
    assert "This key was not accepted" in message and "invalid or revoked" in message
    for section in ("#account", "#admin", "#who"):
        assert not await tab.visible(section), section
    assert await tab.visible("#sign-in")
    assert await tab.page.evaluate("sessionStorage.length") == 0
    await tab.shot(screenshots, "wrong-key")


async def test_a_user_key_cannot_open_another_account_from_the_page(
    tab: Session, stack: Stack, screenshots: Path
) -> None:
    key = stack.keys[USER]
    other = await api_get(stack, stack.admin_key, "/api/v1/credits/balance", account_id=OTHER)
    await tab.open()
    await tab.sign_in(key)
    # The address is not an input: the key decides the account.
    await tab.open(f"/dashboard?account_id={OTHER}#account_id={OTHER}")
    await tab.settled()
    assert await tab.text("#account-id") == USER
    # Un-hide the admin picker and ask for the other account: the API refuses, the page says so.
    await tab.page.evaluate("document.getElementById('admin').hidden = false")
    await tab.page.fill("#account-input", OTHER)
    await tab.page.click("#account-form button[type=submit]")
    await tab.settled()
    assert "Not allowed" in await tab.text("#message")
    assert not await tab.visible("#account")
    asked = [(u, s) for u, s in tab.responses if OTHER in u and "/api/" in u]
    assert asked and all(status == 403 for _, status in asked), asked
    content = await tab.page.content()
    assert other["balance"] not in content
    assert f"{Decimal(other['balance']):,.2f}" not in content
    await tab.shot(screenshots, "user-forbidden")


async def test_an_admin_key_sees_the_system_and_any_account(
    tab: Session, stack: Stack, screenshots: Path
) -> None:
    key = stack.admin_key
    await tab.open()
    await tab.sign_in(key)
    assert await tab.visible("#admin") and not await tab.visible("#account")
    system = await api_get(stack, key, "/api/v1/admin/credits/analytics/system")
    tiles = dict(
        await tab.page.eval_on_selector_all(
            "#system-tiles dd",
            "dds => dds.map(d => [d.dataset.name, d.dataset.value || d.textContent])",
        )
    )
    assert tiles["Total balance"] == system["total_balance"]
    assert tiles["Spend in period"] == system["spend"]
    assert tiles["Accounts"] == str(system["accounts"])
    assert tiles["Events in period"] == f"{system['events']:,}"

    top = await api_get(stack, key, "/api/v1/admin/credits/analytics/top-spenders", limit=10)
    rows = await tab.page.eval_on_selector_all(
        "#spenders tbody tr",
        "rows => rows.map(r => [r.cells[1].dataset.account, r.cells[2].dataset.value,"
        " r.cells[3].textContent])",
    )
    assert rows == [[s["account_id"], s["spend"], f"{s['events']:,}"] for s in top["items"]]
    assert {s["account_id"] for s in top["items"]} >= {USER, OTHER, THIRD}
    await tab.shot(screenshots, "admin")

    # Open an account from the top spenders, as an admin would.
    await tab.page.click(f"#spenders button:text-is('{OTHER}')")
    await tab.settled()
    assert await tab.text("#account-id") == OTHER
    other = await api_get(stack, key, "/api/v1/credits/balance", account_id=OTHER)
    assert await tab.amount("#balance") == Decimal(other["balance"])
    await tab.shot(screenshots, "admin-account")

    # The picker suggests the accounts whose id starts with what is typed, and opens one.
    listed = await api_get(stack, key, "/api/v1/admin/accounts", prefix="dash-c")
    assert [a["account_id"] for a in listed["items"]] == [THIRD]
    await tab.page.fill("#account-input", "")
    await tab.page.type("#account-input", "dash-c")
    await tab.page.wait_for_selector(
        f"#account-options option[value='{THIRD}']:only-child", state="attached"
    )
    await tab.page.click("#account-form button[type=submit]")  # a partial id is no account
    await tab.settled()
    assert "account 'dash-c' does not exist" in await tab.text("#message")
    assert not await tab.visible("#account")
    await tab.page.fill("#account-input", THIRD)  # what choosing the suggestion enters
    await tab.page.press("#account-input", "Enter")
    await tab.settled()
    assert await tab.text("#message") == ""
    assert await tab.text("#account-id") == THIRD
    third = await api_get(stack, key, "/api/v1/credits/balance", account_id=THIRD)
    assert await tab.amount("#balance") == Decimal(third["balance"])
    tab.key_never_in_an_address(key)


async def test_the_api_docs_link_does_not_take_the_key_to_the_docs_page(
    tab: Session, stack: Stack
) -> None:
    # /docs is FastAPI's Swagger UI: no policy, and scripts from a CDN. The footer link used to
    # open it in the dashboard's own tab, where the session storage holding the key belongs to
    # the same origin: any script of the docs page could read the key. It opens a new tab
    # without an opener now, whose session storage starts empty.
    await tab.page.context.route(
        lambda url: not url.startswith(stack.base_url), lambda route: route.abort()
    )
    await tab.open()
    await tab.sign_in(stack.keys[USER])
    assert await tab.text("#account-id") == USER
    async with tab.page.context.expect_page(timeout=10_000) as opened:
        await tab.page.click("footer a[href='/docs']")
    docs = await opened.value
    await docs.wait_for_load_state()
    assert docs.url == stack.base_url + "/docs"
    assert await docs.evaluate("sessionStorage.length") == 0
    assert await docs.evaluate("window.opener") is None
    # The dashboard's tab keeps its key and its account.
    assert tab.page.url == stack.base_url + "/dashboard"
    assert await tab.page.evaluate("sessionStorage.length") == 1
