"""Fixtures for bench tests: the reference server on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location("bench_refserver", Path(__file__).with_name("refserver.py"))
assert _spec is not None and _spec.loader is not None
refserver = importlib.util.module_from_spec(_spec)
sys.modules["bench_refserver"] = refserver
_spec.loader.exec_module(refserver)
RefConfig = refserver.RefConfig
RefServer = refserver.RefServer


@contextmanager
def running(cfg: Any) -> Iterator[Any]:
    """Run a RefServer on its own loop in a thread (so it never shares the client's loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(RefServer(cfg).start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def ref_server() -> Callable[..., Any]:
    """`with ref_server(ttft_s=..., itl_s=...) as srv:` -> srv.base_url, srv.cfg."""

    def make(**kwargs: Any) -> Any:
        return running(RefConfig(**kwargs))

    return make
