"""A small fake Hugging Face Hub: a real threaded HTTP server on 127.0.0.1 serving fixture repos.

It answers the requests huggingface_hub 2.x makes, the way huggingface.co does:
- GET /api/models/{repo}[/revision/{rev}]  model info (sha, siblings with sizes, gated flag)
- GET /api/models?filter=...               model search (the model tree: base_model:quantized:<id>)
- HEAD/GET /{repo}/resolve/{rev}/{path}    file bytes with ETag, X-Repo-Commit, Content-Length,
                                           X-Linked-Size/X-Linked-Etag (LFS), Range -> 206 + Content-Range
- errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) as the Hub does,
  which is what huggingface_hub's hf_raise_for_status maps to its exception classes.

Large files are virtual: a stored prefix (e.g. a real safetensors/GGUF header) followed by zeros up to
the declared size, so a 70B repo exists without 140 GB. Every body byte served is counted.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

VALID_TOKEN = "hf_fakehub_valid_token"


@dataclass
class HubFile:
    data: bytes
    size: int = -1  # virtual size; bytes past `data` read as zeros
    lfs: bool = False

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.data)

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.data + str(self.size).encode()).hexdigest()

    def read(self, start: int, end: int) -> bytes:
        part = self.data[start : end + 1]
        return part + bytes(end + 1 - start - len(part)) if end + 1 > len(self.data) else part


@dataclass
class Repo:
    repo_id: str
    files: dict[str, HubFile]
    sha: str
    gated: bool = False
    tags: list[str] = field(default_factory=list)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content -------------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, HubFile | bytes],
        *,
        gated: bool = False,
        tags: list[str] | None = None,
    ) -> Repo:
        norm = {p: f if isinstance(f, HubFile) else HubFile(f) for p, f in files.items()}
        sha = hashlib.sha1(repo_id.encode() + b"".join(sorted(p.encode() for p in norm))).hexdigest()
        repo = Repo(repo_id, norm, sha, gated, list(tags or []))
        self.repos[repo_id] = repo
        return repo

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.requests.clear()

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    # -- server --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


_RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API_RE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- helpers -------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.fake._count(len(body))  # before writing: the client may assert as soon as it has the bytes
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, *, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
        self._send(status, body, headers, head=head)

    def _authorized(self, repo: Repo) -> bool:
        return not repo.gated or self.headers.get("Authorization") == f"Bearer {VALID_TOKEN}"

    def _dispatch(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        with self.fake._lock:
            self.fake.requests.append((self.command, path, self.headers.get("Range")))
        if path == "/api/models":
            return self._search(parse_qs(split.query), head=head)
        m = _API_RE.match(path)
        if m:
            return self._info(m.group("repo"), m.group("rev") or "main", head=head)
        m = _RESOLVE_RE.match(path)
        if m:
            return self._file(m.group("repo"), m.group("rev"), m.group("path"), head=head)
        return self._error(404, "NotFound", "no such route", head=head)

    def _repo(self, repo_id: str, rev: str, *, head: bool) -> Repo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return None
        if rev not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", "Invalid rev id", head=head)
            return None
        return repo

    def _info(self, repo_id: str, rev: str, *, head: bool) -> None:
        repo = self._repo(repo_id, rev, head=head)
        if repo is None:
            return
        siblings = []
        for p, f in sorted(repo.files.items()):
            entry: dict[str, Any] = {"rfilename": p, "size": f.size, "blobId": f.etag[:40]}
            if f.lfs:
                entry["lfs"] = {"sha256": f.etag, "size": f.size, "pointerSize": 134}
            siblings.append(entry)
        info = {
            "_id": repo.sha[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": repo.tags,
            "siblings": siblings,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2025-01-01T00:00:00.000Z",
        }
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head=head)

    def _search(self, query: dict[str, list[str]], *, head: bool) -> None:
        wanted = set(query.get("filter", []))
        hits = [
            {"_id": r.sha[:24], "id": r.repo_id, "modelId": r.repo_id, "tags": r.tags, "downloads": 10}
            for r in self.fake.repos.values()
            if wanted and wanted <= set(r.tags)
        ]
        self._send(200, json.dumps(hits).encode(), {"Content-Type": "application/json"}, head=head)

    def _file(self, repo_id: str, rev: str, path: str, *, head: bool) -> None:
        repo = self._repo(repo_id, rev, head=head)
        if repo is None:
            return
        if not self._authorized(repo):
            status = 401 if self.headers.get("Authorization") is None else 403
            msg = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
            return self._error(status, "GatedRepo", msg, head=head)
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", head=head)
        headers = {
            "ETag": f'"{f.etag}"',
            "X-Repo-Commit": repo.sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.etag}"'
            headers["X-Linked-Size"] = str(f.size)
        rng = self.headers.get("Range")
        m = re.match(r"bytes=(\d+)-(\d*)$", rng or "")
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else f.size - 1, f.size - 1)
            if start >= f.size:
                headers["Content-Range"] = f"bytes */{f.size}"
                return self._send(416, b"", headers, head=head)
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
            body = b"" if head else f.read(start, end)
            headers["Content-Length"] = str(end - start + 1)
            return self._send(206, body, headers, head=head)
        headers["Content-Length"] = str(f.size)
        if head:
            return self._send(200, b"", headers, head=True)
        if f.size > 64 * 1024 * 1024:  # a test must never download a whole virtual weight file
            return self._error(500, "TooLarge", "fake hub refuses full downloads of large files", head=head)
        return self._send(200, f.read(0, f.size - 1), headers, head=head)
