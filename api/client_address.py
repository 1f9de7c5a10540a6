"""The client address a request is counted under by the per-address limit on key lookups."""

from __future__ import annotations

import ipaddress

from fastapi import Request

# An address that is no IP (a trusted proxy may forward any text in X-Forwarded-For) is
# counted by at most this many of its characters, so a key stays small whatever it sends.
MAX_OTHER_CHARS = 64


def client_address(request: Request) -> str:
    """The peer's address (X-Forwarded-For's client behind a proxy uvicorn trusts, see
    FORWARDED_ALLOW_IPS); an IPv6 address counts as its /64, which one client usually holds
    whole; "unknown" when the server gave none."""
    client = request.client
    if client is None or not client.host:
        return "unknown"
    return _bucket(client.host)


def _bucket(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "other:" + host[:MAX_OTHER_CHARS]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
