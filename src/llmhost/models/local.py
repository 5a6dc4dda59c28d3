"""Local inputs: a model directory, a bare config.json, a .gguf file (or one shard of a split set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmhost.errors import ModelError
from llmhost.models.build import spec_from_gguf, spec_from_hf
from llmhost.models.refs import SPLIT_RE
from llmhost.models.safetensors_meta import read_local
from llmhost.models.spec import ModelFile, ModelSpec
from llmhost.models.tensors import TensorRecord


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc.strerror}.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}.", hint="Check the file.") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object.")
    return data


def split_shards(path: Path) -> list[Path]:
    """All shards of a split GGUF given any one of them, in order; error naming any missing shard."""
    m = SPLIT_RE.search(path.name)
    if m is None:
        return [path]
    count = int(m.group(2))
    stem = path.name[: m.start()]
    shards = [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [s.name for s in shards if not s.exists()]
    if missing:
        raise ModelError(
            f"Split GGUF {stem} is incomplete: missing {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            + ".",
            hint="Download every shard into the same directory.",
        )
    return shards


def resolve_gguf_file(path: Path, ref: str) -> ModelSpec:
    shards = split_shards(path)
    from llmhost.models.gguf_header import read_local_header  # gguf + numpy, for GGUF inputs only

    headers = [read_local_header(s) for s in shards]
    name = SPLIT_RE.sub("", path.name).removesuffix(".gguf") if SPLIT_RE.search(path.name) else path.stem
    files = [ModelFile(path=str(s.resolve()), size_bytes=s.stat().st_size) for s in shards]
    return spec_from_gguf(ref=ref, kind="local_gguf", name=name, headers=headers, files=files)


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = load_json(index).get("weight_map") or {}
        return sorted({directory / f for f in weight_map.values()})
    files = sorted(directory.glob("*.safetensors"))
    standard = [f for f in files if not f.name.startswith("consolidated")]
    return standard or files  # Mistral repos ship both layouts; count one


def _is_first_shard(path: Path) -> bool:
    m = SPLIT_RE.search(path.name)
    return m is None or m.group(1) == "00001"


def resolve_directory(directory: Path, ref: str) -> ModelSpec:
    config_path = directory / "config.json"
    if not config_path.exists():
        ggufs = sorted(p for p in directory.glob("*.gguf") if "mmproj" not in p.name.lower())
        firsts = [p for p in ggufs if _is_first_shard(p)]
        if len(firsts) == 1:
            return resolve_gguf_file(firsts[0], ref)
        if firsts:
            names = ", ".join(p.name for p in firsts[:4])
            raise ModelError(f"{directory} holds several GGUF files ({names}).", hint="Pass one file.")
        raise ModelError(
            f"{directory} has no config.json and no .gguf file.",
            hint="Point at a Hugging Face model directory or a .gguf file.",
        )
    config = load_json(config_path)
    tensors: list[TensorRecord] = []
    files: list[ModelFile] = [
        ModelFile(path=str(config_path.resolve()), size_bytes=config_path.stat().st_size)
    ]
    shard_paths = _safetensors_files(directory)
    for shard in shard_paths:
        if not shard.exists():
            raise ModelError(f"{shard} is listed in the index but missing.", hint="Finish the download.")
        tensors.extend(read_local(shard))
        files.append(ModelFile(path=str(shard.resolve()), size_bytes=shard.stat().st_size))
    notes = [] if shard_paths else ["No .safetensors files in the directory."]
    return spec_from_hf(
        ref=ref,
        kind="local_dir",
        name=directory.resolve().name,
        config=config,
        tensors=tensors or None,
        files=files,
        notes=notes,
    )


def resolve_config_file(path: Path, ref: str) -> ModelSpec:
    config = load_json(path)
    name = path.resolve().parent.name if path.name == "config.json" else path.stem
    return spec_from_hf(
        ref=ref,
        kind="local_config",
        name=name,
        config=config,
        tensors=None,
        files=[ModelFile(path=str(path.resolve()), size_bytes=path.stat().st_size)],
    )


def resolve_local(path: Path, ref: str) -> ModelSpec:
    if path.is_dir():
        return resolve_directory(path, ref)
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return resolve_gguf_file(path, ref)
    if suffix == ".json":
        return resolve_config_file(path, ref)
    if suffix == ".safetensors":
        return resolve_directory(path.parent, ref)
    # Unknown extension: sniff the magic rather than trusting the name.
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc.strerror}.") from exc
    if magic == b"GGUF":
        return resolve_gguf_file(path, ref)
    raise ModelError(
        f"{path} is neither a model directory, a config.json nor a .gguf file.", hint="Check the path."
    )
