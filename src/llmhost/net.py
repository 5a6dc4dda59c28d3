"""Bind and connect addresses: the loopback rules every engine, the supervisor and `serve` share.

An engine bound to a wildcard (`0.0.0.0`, `::`) is reached on loopback; a URL shown to the user or
probed by the supervisor therefore names the address a client can connect to, never the wildcard.
Whether an address is loopback decides whether an API key is required (see docs/security.md).
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_host(host: str) -> str:
    """Where to connect to reach a server bound to `host` (a wildcard bind is reached on loopback)."""
    if host in ("0.0.0.0", ""):  # noqa: S104 (comparing, not binding)
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url_host(host: str) -> str:
    """`host` as it goes in a URL: the connect address, IPv6 in brackets."""
    shown = connect_host(host)
    return f"[{shown}]" if ":" in shown else shown


def base_url(host: str, port: int) -> str:
    """The OpenAI-compatible base URL of a server bound to `host:port`."""
    return f"http://{url_host(host)}:{port}/v1"


def root_url(base_url: str) -> str:
    """`http://h:p/v1` -> `http://h:p`: the server's root, where /health, /metrics and /props live."""
    url = base_url.rstrip("/")
    return url.removesuffix("/v1")
