"""Parse what the user typed into one of the reference kinds `resolve` understands.

meta-llama/Llama-3.1-8B-Instruct            Hub repo (safetensors), revision "main"
meta-llama/Llama-3.1-8B-Instruct@v1.0       ... at a branch, tag or commit
bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M   GGUF repo + quant tag (llama.cpp -hf / Ollama syntax)
hf.co/org/name-GGUF:Q4_K_M                  same, with Ollama's hf.co/ prefix
https://host/path/model.gguf                GGUF URL (header read with range requests)
./dir  ./config.json  ./model.gguf          local directory, bare config, GGUF (split shards too)
ollama:NAME[:TAG]  ollama:user/name:tag     a model pulled with Ollama (its local store)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmhost.errors import ModelError
from llmhost.models.files import present

RefKind = Literal["hf_repo", "gguf_repo", "gguf_url", "local_path", "ollama"]

# llama.cpp's `-hf repo` picks Q4_K_M when no tag is given; so do we.
DEFAULT_GGUF_TAG = "Q4_K_M"

_REPO_RE = re.compile(
    r"^(?:(?:https?://)?(?:hf\.co|huggingface\.co)/)?"
    r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)"
    r"(?:@(?P<rev>[^:@\s]+))?(?::(?P<tag>[\w.+-]+))?(?:@(?P<rev2>[^:@\s]+))?$"
)
# The Hub's own rules for a repo id (huggingface_hub's validate_repo_id), checked here so that breaking
# one is named as a bad reference before anything is fetched.
_REPO_NAME_MAX = 96
_REPO_HINT = "Use org/name: letters, digits, '-', '_' and '.', each part at most 96 characters."
# Git refuses ref names with these (git check-ref-format); a commit sha is 40 hex digits. 255 is the
# longest file name a ref can have.
_BAD_REVISION = re.compile(r"\.\.|[\x00-\x20\x7f~^:?*\[\\]|@\{|^[/.-]|[/.]$|//|\.lock$")
_REVISION_MAX = 255
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedRef:
    kind: RefKind
    raw: str
    repo_id: str | None = None
    revision: str | None = None
    tag: str | None = None
    url: str | None = None
    path: Path | None = None


def _check_repo_id(repo: str) -> None:
    for part in repo.split("/"):
        if len(part) > _REPO_NAME_MAX:
            raise ModelError(
                f"Repo id {repo!r}: {part[:20]!r}... is longer than {_REPO_NAME_MAX} characters.",
                hint=_REPO_HINT,
            )
        if part.startswith(("-", ".")) or part.endswith(("-", ".")):
            raise ModelError(
                f"Repo id {repo!r}: a part cannot start or end with '-' or '.'.", hint=_REPO_HINT
            )
    if "--" in repo or ".." in repo:
        raise ModelError(f"Repo id {repo!r} contains '--' or '..', which the Hub forbids.", hint=_REPO_HINT)
    if repo.endswith(".git"):
        raise ModelError(f"Repo id {repo!r} ends with '.git', which the Hub forbids.", hint=_REPO_HINT)


def _check_revision(rev: str) -> None:
    if len(rev) > _REVISION_MAX or _BAD_REVISION.search(rev):
        raise ModelError(
            f"{rev[:60]!r} is not a valid revision (a branch, tag or commit).",
            hint="Check the @revision: a branch or tag name like main or v1.0, or a commit sha.",
        )


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", ".\\")) or ref.endswith((".gguf", ".json", ".safetensors"))


def parse_ref(ref: str, *, revision: str | None = None) -> ParsedRef:
    raw = ref
    ref = ref.strip()
    if ref.startswith("ollama:"):
        # Checked here (cheap, no store access) so that a bad name fails before anything is read.
        from llmhost.models.ollama import parse_name

        name = parse_name(ref)
        return ParsedRef(
            kind="ollama", raw=raw, repo_id=f"{name.host}/{name.namespace}/{name.model}", tag=name.tag
        )
    if not ref:
        raise ModelError(
            "Empty model reference.", hint="Pass a Hub id like org/name, a directory or a .gguf file."
        )
    if ref.startswith(("http://", "https://")) and not re.match(
        r"^https?://(hf\.co|huggingface\.co)/[^/]+/[^/]+/?$", ref
    ):
        if not re.search(r"\.gguf(?:\?.*)?$", ref, re.IGNORECASE):
            raise ModelError(
                f"URL {ref!r} does not point at a .gguf file.",
                hint="Pass a direct .gguf URL, or a Hub id like org/name.",
            )
        # A Hub web page URL (/blob/) serves HTML; the file itself is under /resolve/.
        url = re.sub(r"^(https?://(?:hf\.co|huggingface\.co)/[^/]+/[^/]+)/blob/", r"\1/resolve/", ref)
        return ParsedRef(kind="gguf_url", raw=raw, url=url)
    path = Path(ref).expanduser()
    if present(path):  # an over-long name or a NUL is a ModelError naming it, not an OSError
        return ParsedRef(kind="local_path", raw=raw, path=path)
    if _looks_like_path(ref):
        if SPLIT_RE.search(ref) and present(path.parent):
            return ParsedRef(kind="local_path", raw=raw, path=path)  # let local.py name the missing shard
        raise ModelError(f"No such file or directory: {ref}.", hint="Check the path.")
    m = _REPO_RE.match(ref.rstrip("/"))
    if m is None:
        raise ModelError(
            f"{ref!r} is not a model reference.",
            hint="Use org/name[@revision], org/name-GGUF:Q4_K_M, a .gguf URL, a directory or a file.",
        )
    repo = m.group("repo")
    _check_repo_id(repo)
    rev = revision or m.group("rev") or m.group("rev2")
    if rev is not None:
        _check_revision(rev)
    tag = m.group("tag")
    if tag is None and repo.lower().endswith("-gguf"):
        tag = DEFAULT_GGUF_TAG
    if tag is not None:
        return ParsedRef(kind="gguf_repo", raw=raw, repo_id=repo, revision=rev, tag=tag.upper())
    return ParsedRef(kind="hf_repo", raw=raw, repo_id=repo, revision=rev)
