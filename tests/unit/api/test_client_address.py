"""The address a request's key lookups are counted under."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from api.client_address import MAX_OTHER_CHARS, client_address


def _request(client: tuple[str, int] | None) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": client})


@pytest.mark.parametrize(
    ("host", "counted_as"),
    [
        ("203.0.113.9", "203.0.113.9"),
        # One client usually holds a whole /64: each of its addresses counts as one.
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("", "unknown"),
        ("not an address", "other:not an address"),
    ],
)
def test_addresses_and_ipv6_prefixes(host: str, counted_as: str) -> None:
    assert client_address(_request((host, 1234))) == counted_as


def test_no_client_and_huge_or_hostile_hosts_stay_small() -> None:
    assert client_address(_request(None)) == "unknown"
    huge = client_address(_request(("x\x00" * 100_000, 1)))
    assert huge == "other:" + ("x\x00" * 100_000)[:MAX_OTHER_CHARS]
