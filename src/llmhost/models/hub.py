"""The one module that talks to huggingface_hub. Every Hub failure becomes a one-line llmhost error.

Environment is read at call time (not at import, as huggingface_hub.constants does), so HF_ENDPOINT,
HF_TOKEN, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE set by the caller or a test always apply.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
from huggingface_hub import hf_hub_download, hf_hub_url

from llmhost.errors import LlmhostError, ModelError, NetworkError
from llmhost.models.files import parse_json, read_bounded

if TYPE_CHECKING:  # hf_api is the heaviest part of huggingface_hub; a warm-cache plan never needs it
    from huggingface_hub import HfApi

_TIMEOUT_S = 15.0
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HubContext:
    endpoint: str
    token: str | None
    cache_dir: Path
    offline: bool


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int | None


@dataclass(frozen=True)
class RepoInfo:
    repo_id: str
    sha: str
    files: list[RepoFile]
    gated: bool


def context(offline: bool | None = None) -> HubContext:
    env = os.environ
    endpoint = (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or huggingface_hub.get_token()
    hub_cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if hub_cache:
        cache = Path(hub_cache).expanduser()
    else:
        home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
        cache = Path(home).expanduser() / "hub"
    if offline is None:
        flag = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
        offline = flag.upper() in _TRUE or bool(hf_constants.HF_HUB_OFFLINE)
    return HubContext(endpoint=endpoint, token=token or None, cache_dir=cache, offline=offline)


def _offline_miss(what: str) -> ModelError:
    return ModelError(
        f"{what} is not in the local Hugging Face cache and offline mode is on.",
        hint="Run the same command once online, or unset HF_HUB_OFFLINE.",
    )


@contextmanager
def translate(repo_id: str, what: str, ctx: HubContext) -> Iterator[None]:
    """Turn huggingface_hub / HTTP failures into ModelError or NetworkError with a next step."""
    try:
        yield
    except LlmhostError:
        raise
    except hf_errors.HFValidationError as exc:
        # huggingface_hub's own checks of a repo id or revision; refs.py applies the same rules first,
        # so this is the backstop for a rule it does not know yet.
        raise ModelError(
            f"{repo_id!r} is not a valid Hub reference: {exc}", hint="Check the repo id and @revision."
        ) from exc
    except hf_errors.GatedRepoError as exc:
        raise ModelError(
            f"{repo_id} is a gated repo and this token has no access.",
            hint=f"Accept the licence at {ctx.endpoint}/{repo_id} and set HF_TOKEN to your token.",
        ) from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise ModelError(f"{repo_id} has no such revision.", hint="Check the @revision.") from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise ModelError(
            f"{repo_id} was not found on {ctx.endpoint} (or is private).",
            hint="Check the spelling; for a private repo set HF_TOKEN.",
        ) from exc
    except hf_errors.RemoteEntryNotFoundError as exc:
        raise ModelError(f"{repo_id} has no file {what}.") from exc
    except hf_errors.OfflineModeIsEnabled as exc:
        raise _offline_miss(f"{repo_id} ({what})") from exc
    except hf_errors.LocalEntryNotFoundError as exc:
        if ctx.offline:
            raise _offline_miss(f"{repo_id} ({what})") from exc
        raise NetworkError(
            f"Cannot reach {ctx.endpoint} to fetch {what} of {repo_id}.",
            hint="Check the network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use the cache.",
        ) from exc
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise ModelError(
                f"{ctx.endpoint} refused access to {repo_id} (HTTP {status}).",
                hint="Set HF_TOKEN to a token that can read this repo.",
            ) from exc
        if status is not None and status >= 500:
            raise NetworkError(
                f"{ctx.endpoint} failed with HTTP {status} fetching {what} of {repo_id}."
            ) from exc
        raise ModelError(f"Fetching {what} of {repo_id} failed: HTTP {status}.") from exc
    except (OSError, TimeoutError) as exc:
        raise NetworkError(
            f"Cannot reach {ctx.endpoint} to fetch {what} of {repo_id}: {type(exc).__name__}.",
            hint="Check the network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use the cache.",
        ) from exc
    except Exception as exc:
        # httpx transport errors are not OSError subclasses
        if type(exc).__module__.startswith(("httpx", "httpcore", "httpx2")):
            raise NetworkError(
                f"Cannot reach {ctx.endpoint} to fetch {what} of {repo_id}: {type(exc).__name__}.",
                hint="Check the network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use the cache.",
            ) from exc
        raise


def api(ctx: HubContext) -> HfApi:
    from huggingface_hub import HfApi

    return HfApi(endpoint=ctx.endpoint, token=ctx.token)


def repo_info(ctx: HubContext, repo_id: str, revision: str | None) -> RepoInfo:
    if ctx.offline:
        raise _offline_miss(f"{repo_id} (file list)")
    with translate(repo_id, "the file list", ctx):
        info = api(ctx).model_info(repo_id, revision=revision, files_metadata=True, timeout=_TIMEOUT_S)
    files = [RepoFile(s.rfilename, s.size) for s in (info.siblings or [])]
    return RepoInfo(
        repo_id=repo_id, sha=str(info.sha or revision or "main"), files=files, gated=bool(info.gated)
    )


def download_json(ctx: HubContext, repo_id: str, filename: str, revision: str | None) -> tuple[Any, str, int]:
    """A small JSON file through the HF cache. Returns (data, commit sha, bytes downloaded now)."""
    cached = _cached_path(ctx, repo_id, filename, revision)
    with translate(repo_id, filename, ctx):
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=str(ctx.cache_dir),
            endpoint=ctx.endpoint,
            token=ctx.token,
            local_files_only=ctx.offline,
            etag_timeout=_TIMEOUT_S,
        )
    p = Path(path)
    raw = read_bounded(p)  # a hostile repo's JSON is as untrusted as a local one: same bounds
    fetched = 0 if cached else len(raw)
    data = parse_json(raw, label=f"{repo_id}/{filename}")
    return data, p.parent.name if p.parent.parent.name == "snapshots" else _snapshot_sha(p), fetched


def _snapshot_sha(p: Path) -> str:
    for parent in p.parents:
        if parent.parent.name == "snapshots":
            return parent.name
    return "unknown"


def _cached_path(ctx: HubContext, repo_id: str, filename: str, revision: str | None) -> str | None:
    found = huggingface_hub.try_to_load_from_cache(
        repo_id, filename, cache_dir=str(ctx.cache_dir), revision=revision
    )
    return found if isinstance(found, str) else None


def file_url(ctx: HubContext, repo_id: str, filename: str, revision: str) -> str:
    return hf_hub_url(repo_id, filename, revision=revision, endpoint=ctx.endpoint)


def fetch_range(ctx: HubContext, url: str, start: int, end: int, *, label: str) -> tuple[bytes, int | None]:
    """GET bytes [start, end] of `url`; returns (bytes, total file size if the server said).

    Reads at most end-start+1 bytes even if the server ignores the Range header.
    """
    if ctx.offline:
        raise _offline_miss(label)
    headers: dict[str, str] = {"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
    if ctx.token and url.startswith(ctx.endpoint):
        headers["Authorization"] = f"Bearer {ctx.token}"
    want = end - start + 1
    from huggingface_hub import get_session, hf_raise_for_status

    session = get_session()
    with (
        translate(label, f"bytes {start}-{end}", ctx),
        session.stream("GET", url, headers=headers, timeout=_TIMEOUT_S, follow_redirects=True) as resp,
    ):
        if resp.status_code >= 400:
            resp.read()
            hf_raise_for_status(resp)
        total = _total_size(resp.headers)
        if resp.status_code == 200 and start > 0:
            raise ModelError(f"{label}: the server does not support HTTP range requests.")
        buf = bytearray()
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) >= want:
                break
    return bytes(buf[:want]), total


def _total_size(headers: Any) -> int | None:
    content_range = headers.get("Content-Range")
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1]
        if tail.isdigit():
            return int(tail)
    length = headers.get("Content-Length")
    if length and length.isdigit() and not content_range:
        return int(length)
    return None


def list_quantized(ctx: HubContext, repo_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """Repos declaring `base_model:quantized:<repo_id>` in their card (the Hub's model tree)."""
    if ctx.offline:
        return []
    with translate(repo_id, "the model tree", ctx):
        models = api(ctx).list_models(
            filter=f"base_model:quantized:{repo_id}", sort="downloads", limit=limit, full=False
        )
        return [{"repo_id": m.id, "tags": list(m.tags or []), "downloads": m.downloads} for m in models]
