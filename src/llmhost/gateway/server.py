"""The gateway's HTTP surface on aiohttp's server: OpenAI-compatible routes relayed to the engines.

Bodies go upstream as they came, except `model`, rewritten to the engine's served name when it differs;
streamed answers (SSE) are relayed chunk by chunk as they arrive; a client that goes away closes its
upstream request at once (the engine stops generating); an engine's error keeps its status and JSON
body. The gateway's own errors are OpenAI-shaped: `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from llmhost.errors import LlmhostError
from llmhost.gateway.config import GatewayConfig, Keys
from llmhost.gateway.metrics import GatewayMetrics
from llmhost.gateway.pool import GatewayBusy, ModelUnavailable, Pool, Slot
from llmhost.supervise.logs import RotatingLog
from llmhost.supervise.state import Deployment

PROXIED = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages")
# Request headers that are the gateway's business, not the engine's.
_DROP_REQUEST = frozenset(
    {"host", "authorization", "x-api-key", "content-length", "connection", "keep-alive",
     "transfer-encoding", "te", "upgrade", "proxy-authorization", "accept-encoding"}
)  # fmt: skip
_KEEP_RESPONSE = ("Content-Type", "Cache-Control", "X-Request-Id")
_TAIL_BYTES = 8192  # the end of a stream kept to read its usage event from
UPSTREAM_IDLE_S = 3.0  # under the engines' own 5 s keep-alive timeout

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, kind: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": code or kind}}
    return web.json_response(body, status=status, headers=headers)


class Gateway:
    """The aiohttp application and what its handlers share."""

    def __init__(
        self,
        config: GatewayConfig,
        pool: Pool,
        keys: Keys,
        metrics: GatewayMetrics,
        access: RotatingLog | None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.keys = keys
        self.metrics = metrics
        self.access = access
        self.warn = warn
        self._keys_problem: str | None = None  # the last one said in the gateway's output
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[self._errors, self._auth]
        )
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)  # OpenAI's retrieve: client.models.retrieve
        for path in PROXIED:
            app.router.add_post(path, self._proxy)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app: web.Application) -> None:
        self.session = _upstream_session()

    async def _close(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # -- middlewares ------------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                return error_response(
                    413,
                    f"The request body is larger than {self.config.max_body_bytes} bytes.",
                    "request_too_large",
                )
            if exc.status >= 400:
                return error_response(exc.status, exc.reason, "invalid_request_error")
            raise

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/health":
            return await handler(request)
        try:
            self.keys.reload()
        except LlmhostError as exc:  # e.g. a keys file made readable by others: refuse every request
            # Why goes to the gateway's output (once while it lasts), not to a client that may not even
            # hold a key: the message names the file's path.
            if exc.message != self._keys_problem and self.warn is not None:
                self.warn(f"{exc.message} Every request is refused until it is fixed.")
            self._keys_problem = exc.message
            return error_response(
                500, "The gateway cannot use its keys file; its operator finds why in the gateway's output.",
                "server_error", code="keys_file",
            )  # fmt: skip
        self._keys_problem = None
        if self.keys.enabled:
            name = self.keys.match(_presented_key(request))
            if name is None:
                self.metrics.requests.labels("", "401", "").inc()
                self._log({"id": _request_id(), "path": request.path, "status": 401})  # no key
                return error_response(
                    401, "Invalid or missing API key.", "invalid_request_error", code="invalid_api_key"
                )
            request["key_name"] = name
        return await handler(request)

    # -- routes -------------------------------------------------------------------------------------
    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})

    async def _models(self, _request: web.Request) -> web.Response:
        await self.pool.refresh_measured()  # memory as of now
        data = [_model_card(slot, self.config) for slot in self.pool.all_slots()]
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.Response:
        requested = request.match_info["model"]
        slot = self.pool.lookup(requested)
        if slot is None:
            return self._not_found(requested)
        await self.pool.refresh_measured()
        return web.json_response({**_model_card(slot, self.config), "id": requested})

    def _not_found(self, requested: str) -> web.Response:
        names = ", ".join(self.pool.names()) or "none"
        return error_response(
            404, f"The model {requested!r} does not exist here. Models: {names}.",
            "invalid_request_error", code="model_not_found",
        )  # fmt: skip

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        record: dict[str, Any] = {
            "id": _request_id(),
            "path": request.path,
            "key": request.get("key_name"),
        }
        response: web.StreamResponse | None = None
        try:
            response = await self._route(request, record, started)
            return response
        finally:
            status = str(record.get("status") or (response.status if response is not None else 499))
            model = record.get("model") or ""
            self.metrics.requests.labels(model, status, record.get("key") or "").inc()
            duration = time.perf_counter() - started
            if model and record.get("ttft_s") is not None:
                self.metrics.ttft.labels(model).observe(record["ttft_s"])
                self.metrics.duration.labels(model).observe(duration)
            self._log({**record, "status": int(status), "duration_s": round(duration, 4)})

    async def _route(
        self, request: web.Request, record: dict[str, Any], started: float
    ) -> web.StreamResponse:
        body = await request.read()
        try:
            doc = json.loads(body)
        except ValueError:
            return error_response(
                400, "The request body is not valid JSON.", "invalid_request_error", code="bad_json"
            )
        if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
            return error_response(
                400, 'The request body must be a JSON object with a "model" string.', "invalid_request_error",
                code="missing_model",
            )  # fmt: skip
        requested = doc["model"]
        slot = self.pool.lookup(requested)
        if slot is None:
            return self._not_found(requested)
        record["model"] = slot.name
        if request.path == "/v1/embeddings" and not slot.embeddings:
            return error_response(
                400, f"The model {slot.name!r} does not serve embeddings (set embeddings: true for it).",
                "invalid_request_error", code="embeddings_unsupported",
            )  # fmt: skip
        try:
            await self.pool.acquire(slot, time.time() + self.config.queue_timeout_of(slot.name))
        except GatewayBusy as exc:
            return error_response(
                503, exc.message, "server_busy", headers={"Retry-After": str(max(1, round(exc.retry_after)))}
            )
        except ModelUnavailable as exc:
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
            return error_response(503, exc.message, "model_unavailable", headers=headers)
        try:
            return await self._forward(request, slot, doc, body, record, started)
        finally:
            self.pool.release(slot)

    async def _forward(
        self,
        request: web.Request,
        slot: Slot,
        doc: dict[str, Any],
        body: bytes,
        record: dict[str, Any],
        started: float,
    ) -> web.StreamResponse:
        dep = slot.dep
        assert dep is not None and self.session is not None
        rename = _renamer(dep.served_model_name, doc["model"])
        if doc["model"] != dep.served_model_name:
            doc["model"] = dep.served_model_name
            body = json.dumps(doc, ensure_ascii=False).encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        if slot.key:
            headers["Authorization"] = f"Bearer {slot.key}"
        fresh: aiohttp.ClientSession | None = None
        try:
            upstream = await self.session.post(_url(dep, request.path), data=body, headers=headers)
        except aiohttp.ClientError as exc:
            # No answer at all: the engine crashed (its supervisor is restarting it) or a pooled
            # connection outlived an engine that was restarted. Wait until the supervisor says it is
            # ready again, then send once more on a new connection (no answer came: nothing to undo).
            try:
                await self.pool.recheck(slot, time.time() + self.config.queue_timeout_of(slot.name))
                assert slot.dep is not None
                fresh = _upstream_session()
                record["resent"] = True  # in the access log: this request was sent twice
                upstream = await fresh.post(_url(slot.dep, request.path), data=body, headers=headers)
            except (aiohttp.ClientError, GatewayBusy, ModelUnavailable):
                if fresh is not None:
                    await fresh.close()
                self.pool.suspect(slot)
                return error_response(
                    502, f"The engine of {slot.name!r} did not answer: {exc}.", "upstream_error"
                )
        streamed = upstream.status == 200 and upstream.headers.get("Content-Type", "").startswith(
            "text/event-stream"
        )
        try:
            if streamed:
                return await self._relay_stream(request, slot, upstream, record, started, rename)
            data = await upstream.read()
            record["ttft_s"] = time.perf_counter() - started
            if upstream.status == 200:
                _count_usage(data, record, self.metrics, slot.name)
                data = rename(data) if rename is not None else data
            out_headers = {k: upstream.headers[k] for k in _KEEP_RESPONSE if k in upstream.headers}
            return web.Response(status=upstream.status, body=data, headers=out_headers)
        except aiohttp.ClientError as exc:
            self.pool.suspect(slot)
            return error_response(502, f"The engine of {slot.name!r} failed: {exc}.", "upstream_error")
        finally:
            if upstream.content.at_eof():
                # Read to the end: aiohttp gave the connection back to its pool at the payload's end,
                # streamed or not. An engine that keeps it (uvicorn: vLLM, llama-cpp-python) gets the next
                # request on it; one that closed it (llama-server, after every stream, though it announces
                # keep-alive) is dropped from the pool when the close arrives.
                upstream.release()
            else:
                upstream.close()  # a client that left: drop the connection, so the engine stops generating
            if fresh is not None:
                await fresh.close()

    async def _relay_stream(
        self,
        request: web.Request,
        slot: Slot,
        upstream: aiohttp.ClientResponse,
        record: dict[str, Any],
        started: float,
        rename: Callable[[bytes], bytes] | None,
    ) -> web.StreamResponse:
        """Relay the engine's SSE as it arrives. With `rename`, each complete line is relayed with the
        client's model name; only a line's unfinished tail (never a whole event) waits for its end."""
        out = web.StreamResponse(status=200)
        for k in _KEEP_RESPONSE:
            if k in upstream.headers:
                out.headers[k] = upstream.headers[k]
        out.headers["X-Accel-Buffering"] = "no"
        await out.prepare(request)
        pieces = 0  # chat chunks with content text: the count when the engine sends no usage
        tail = b""  # the stream's end: an engine's usage event (completions, messages, include_usage)
        lines = _Lines(rename) if rename is not None else None
        content, write = upstream.content, out.write  # the per-token loop: as little as can be per chunk
        try:
            chunk = await content.readany()
            if chunk:
                record["ttft_s"] = time.perf_counter() - started
            while chunk:
                if lines is not None:
                    chunk = lines.feed(chunk)
                if chunk:
                    pieces += chunk.count(b'"content":"')
                    tail = (tail + chunk)[-_TAIL_BYTES:]
                    await write(chunk)
                chunk = await content.readany()
            rest = lines.flush() if lines is not None else b""
            if rest:
                pieces += rest.count(b'"content":"')
                tail = (tail + rest)[-_TAIL_BYTES:]
                await out.write(rest)
        except aiohttp.ClientError as exc:
            # The engine went away mid-stream (a crash): end the stream with an error event the OpenAI
            # clients raise, instead of a silently truncated answer.
            self.pool.suspect(slot)
            record["status"] = 502
            error = {"error": {"message": f"The engine of {slot.name!r} failed mid-stream: {exc}.",
                               "type": "upstream_error", "code": "upstream_error"}}  # fmt: skip
            await out.write(b"data: " + json.dumps(error).encode() + b"\n\n")
        if not _stream_usage(tail, record, self.metrics, slot.name):
            record["tokens"] = pieces
            self.metrics.tokens.labels(slot.name, "completion").inc(pieces)
        await out.write_eof()
        return out

    def _log(self, record: dict[str, Any]) -> None:
        if self.access is None:
            return
        line = {"ts": round(time.time(), 3), **{k: v for k, v in record.items() if v is not None}}
        if "ttft_s" in line:
            line["ttft_s"] = round(line["ttft_s"], 4)
        self.access.write((json.dumps(line) + "\n").encode())


def _request_id() -> str:
    """The access log's id of one request."""
    return uuid.uuid4().hex[:16]


def _upstream_session() -> aiohttp.ClientSession:
    """The client side of the relay. No total timeout: a long generation is not an error; the engine's
    own limits apply. Bodies pass through undecoded. Idle pooled connections are dropped before the
    engines drop them (llama-server and vLLM's uvicorn close an idle keep-alive connection after 5 s;
    aiohttp's default keeps one 15 s): a request sent on a connection the engine just closed fails
    without an answer and has to be resent."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=UPSTREAM_IDLE_S)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False
    )


def _url(dep: Deployment, path: str) -> str:
    return dep.base_url.removesuffix("/v1") + path


def _presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def _renamer(served: str, requested: str) -> Callable[[bytes], bytes] | None:
    """Bytes -> the same bytes with the engine's `"model": SERVED` as the name the client asked for
    (an alias stays an alias), or None when they are the same name. JSON's own escaping means the text a
    model generates can never contain the quoted key and value as they are matched here."""
    if served == requested:
        return None
    old, new = (json.dumps(name, ensure_ascii=False).encode() for name in (served, requested))
    pairs = [(b'"model":' + sep + old, b'"model":' + sep + new) for sep in (b"", b" ")]

    def rename(data: bytes) -> bytes:
        for before, after in pairs:
            data = data.replace(before, after)
        return data

    return rename


class _Lines:
    """Applies `rename` to a byte stream a whole line at a time: `feed` returns the complete lines so
    far (renamed), keeping an unfinished last line for the next chunk; `flush` returns what is left."""

    def __init__(self, rename: Callable[[bytes], bytes]) -> None:
        self.rename = rename
        self.pending = b""

    MAX_PENDING = 1 << 20  # a "line" longer than this is not SSE: relay it as it comes

    def feed(self, chunk: bytes) -> bytes:
        data = self.pending + chunk
        cut = data.rfind(b"\n") + 1
        if len(data) - cut > self.MAX_PENDING:
            cut = len(data)
        self.pending = data[cut:]
        return self.rename(data[:cut]) if cut else b""

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return self.rename(rest) if rest else b""


def _stream_usage(tail: bytes, record: dict[str, Any], metrics: GatewayMetrics, model: str) -> bool:
    """Count the last SSE event of `tail` that carries a completion count in its usage (OpenAI's final
    usage chunk, Anthropic's message_delta); False when there is none."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data:") and b'"usage"' in line and b"_tokens" in line:
            found: dict[str, Any] = {}
            _count_usage(line[5:], found, metrics, model)
            if "tokens" in found:
                record["tokens"] = found["tokens"]
                return True
    return False


def _count_usage(data: bytes, record: dict[str, Any], metrics: GatewayMetrics, model: str) -> None:
    try:
        usage = json.loads(data).get("usage") or {}
    except (ValueError, AttributeError):
        return
    if not isinstance(usage, dict):
        return
    for kind, keys in (
        ("prompt", ("prompt_tokens", "input_tokens")),
        ("completion", ("completion_tokens", "output_tokens")),
    ):
        value = next((usage[k] for k in keys if isinstance(usage.get(k), int)), None)
        if value is not None:
            metrics.tokens.labels(model, kind).inc(value)
            if kind == "completion":
                record["tokens"] = value


def _model_card(slot: Slot, config: GatewayConfig) -> dict[str, Any]:
    dep = slot.dep
    resident = slot.resident()
    devices = sorted(resident.devices)
    info: dict[str, Any] = {
        "state": slot.state,
        "engine": dep.runtime if dep is not None else (slot.entry.engine if slot.entry else None),
        "deployment": dep.name if dep is not None else None,
        "manual": slot.manual,
        "pinned": slot.pinned,
        "aliases": list(slot.entry.aliases) if slot.entry else [],
        "memory": {
            d: {"planned": resident.planned.get(d), "measured": resident.measured.get(d)} for d in devices
        },
        "last_used": slot.last_used or None,
        "in_flight": slot.in_flight,
        "queued": slot.waiting,
        "failure": slot.failure,
        "ttl_s": config.ttl_of(slot.name) if slot.entry else None,
    }
    created = int(dep.created_at) if dep is not None else 0
    return {"id": slot.name, "object": "model", "created": created, "owned_by": "llmhost", "llmhost": info}
