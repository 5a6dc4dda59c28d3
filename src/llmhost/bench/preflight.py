"""Before any load: reach the server, check the key and the model name, read its slots.

Side requests close their connection and are capped in time and size (the server may be hostile)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from llmhost.bench import untrusted
from llmhost.bench.models import (
    Flag,
    Target,
)
from llmhost.errors import BenchError, NetworkError, UsageError
from llmhost.net import root_url

NOT_FOUND_HINT = (
    "Check --base-url (the API root, http://HOST:PORT/v1 on most servers, not an endpoint), "
    "--api and --model."
)
# Side requests (the model list, /props) wait this long at most, or --timeout when that is shorter.
PREFLIGHT_TIMEOUT_S = 10.0
PROPS_TIMEOUT_S = 5.0
# Model ids quoted when --model is not among them (a server may list thousands).
MAX_LISTED_MODELS = 10


async def _get_json(http: aiohttp.ClientSession, url: str, timeout_s: float) -> tuple[int, Any]:
    # Connection: close, so side requests never pin one of the server's HTTP threads with an idle
    # keep-alive connection (llama-server serves each connection on one of n_slots+2 threads).
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with http.get(url, timeout=timeout, headers={"connection": "close"}) as response:
        body = await untrusted.read_capped(response, untrusted.MAX_JSON_BODY_BYTES)
    try:
        return response.status, untrusted.parse_json(body)
    except ValueError:
        return response.status, None


def _model_ids(data: Any) -> list[str] | None:
    """The ids of an OpenAI model list (`{"data": [{"id": ...}, ...]}`); None for any other shape."""
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def preflight(http: aiohttp.ClientSession, target: Target, timeout_s: float = 600.0) -> list[Flag]:
    """Reach the server, check the key and the model name before sending load."""
    url = target.base_url.rstrip("/") + "/models"
    try:
        status, data = await _get_json(http, url, min(PREFLIGHT_TIMEOUT_S, timeout_s))
    except aiohttp.InvalidURL as exc:
        raise UsageError(
            f"--base-url {target.base_url} is not a valid URL (its host or port).",
            hint="Pass the server's API root, e.g. --base-url http://127.0.0.1:8000/v1.",
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        raise NetworkError(
            f"cannot reach {target.base_url}: {exc.os_error.strerror or exc}.",
            hint="Check --base-url (host, port, /v1) and that the server is up; see `llmhost ps`.",
        ) from exc
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        why = untrusted.quoted(f"{type(exc).__name__} {exc}")  # aiohttp quotes what the server sent
        raise NetworkError(
            f"cannot reach {target.base_url}: {why}.",
            hint="Check --base-url and that the server is up.",
        ) from exc
    if status in (401, 403):
        sent = "the API key was rejected" if target.api_key_used else "it needs an API key"
        raise BenchError(
            f"{target.base_url} answered {status}: {sent}.",
            hint="Pass --api-key or set LLMHOST_API_KEY (or OPENAI_API_KEY) to the server's key.",
        )
    if status != 200:
        return [
            Flag(
                code="no_model_list",
                severity="info",
                message=f"GET {url} answered {status}: the model name was not checked first.",
            )
        ]
    ids = _model_ids(data)
    if ids is None:
        return [
            Flag(
                code="no_model_list",
                severity="info",
                message=f"GET {url} answered no OpenAI model list: the model name was not checked first.",
            )
        ]
    if ids and target.model not in ids:
        listed = ", ".join(untrusted.quoted(i, 80) for i in ids[:MAX_LISTED_MODELS])
        more = f" and {len(ids) - MAX_LISTED_MODELS} more" if len(ids) > MAX_LISTED_MODELS else ""
        raise BenchError(
            f"model {target.model!r} is not served at {target.base_url}; it serves: {listed}{more}.",
            hint=f"Pass --model {untrusted.quoted(ids[0], 80)}.",
        )
    return []


async def probe_slots(http: aiohttp.ClientSession, target: Target, timeout_s: float = 600.0) -> None:
    """llama-server tells its parallel slots in /props (`total_slots`)."""
    if target.server_slots is not None:
        return
    try:
        status, data = await _get_json(
            http, root_url(target.base_url) + "/props", min(PROPS_TIMEOUT_S, timeout_s)
        )
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return
    slots = data.get("total_slots") if status == 200 and isinstance(data, dict) else None
    if untrusted.token_count(slots) and slots > 0:
        target.server_slots = slots
        target.server_slots_source = "llama-server /props total_slots"
