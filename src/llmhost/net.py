"""Bind and connect addresses: the loopback rules every engine, the supervisor and `serve` share.

An engine bound to a wildcard (`0.0.0.0`, `::`) is reached on loopback; a URL shown to the user or
probed by the supervisor therefore names the address a client can connect to, never the wildcard.
Whether an address is loopback decides whether an API key is required (see docs/security.md).
And the event loop the client and server that stream tokens run on (`new_event_loop`).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where installed (a dependency everywhere but Windows), asyncio's otherwise.
    Measured on the token path: about 40% more tokens per second through bench's client at 128 streams
    (benchmarks/bench_client_capacity.py), and less of the gateway's CPU per relayed token
    (benchmarks/gateway_overhead.py)."""
    try:
        import uvloop
    except ImportError:  # uvloop has no Windows build
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_on_new_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on `new_event_loop()` (asyncio.run takes no loop factory before 3.12)."""
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


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
