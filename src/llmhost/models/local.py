"""Local inputs: a model directory, a bare config.json, a .gguf file (or one shard of a split set)."""

from __future__ import annotations

import os
from pathlib import Path

from llmhost.errors import ModelError
from llmhost.models.build import spec_from_gguf, spec_from_hf
from llmhost.models.files import cannot_read, load_json_object, open_regular, present, require_regular
from llmhost.models.refs import SPLIT_RE
from llmhost.models.safetensors_meta import read_local, shard_names
from llmhost.models.spec import ModelFile, ModelSpec
from llmhost.models.tensors import TensorRecord


def split_shards(path: Path) -> list[Path]:
    """All shards of a split GGUF given any one of them, in order; error naming any missing shard."""
    m = SPLIT_RE.search(path.name)
    if m is None:
        return [path]
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= index <= count:
        raise ModelError(
            f"{path.name} is not a valid split GGUF name: shard {index} of {count}.",
            hint="Split shards are named like model-00001-of-00003.gguf; rename the file or pass another.",
        )
    stem = path.name[: m.start()]
    shards = [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [s.name for s in shards if not s.exists()]
    if missing:
        raise ModelError(
            f"Split GGUF {stem} is incomplete: missing {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            + ".",
            hint="Download every shard into the same directory (check their names).",
        )
    return shards


def resolve_gguf_file(path: Path, ref: str) -> ModelSpec:
    shards = split_shards(path)
    from llmhost.models.gguf_header import read_local_header  # for GGUF inputs only

    sizes = [require_regular(s).st_size for s in shards]  # the GGUF reader would block on a FIFO
    headers = [read_local_header(s) for s in shards]
    name = SPLIT_RE.sub("", path.name).removesuffix(".gguf") if SPLIT_RE.search(path.name) else path.stem
    files = [ModelFile(path=str(s.resolve()), size_bytes=n) for s, n in zip(shards, sizes, strict=True)]
    return spec_from_gguf(ref=ref, kind="local_gguf", name=name, headers=headers, files=files)


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        return [directory / f for f in shard_names(load_json_object(index), label=str(index))]
    files = sorted(directory.glob("*.safetensors"))
    standard = [f for f in files if not f.name.startswith("consolidated")]
    return standard or files  # Mistral repos ship both layouts; count one


def _is_first_shard(path: Path) -> bool:
    m = SPLIT_RE.search(path.name)
    return m is None or m.group(1) == "00001"


def resolve_directory(directory: Path, ref: str) -> ModelSpec:
    try:
        os.listdir(directory)  # an unreadable directory fails here, not as a stat() deep in a reader
    except OSError as exc:
        raise cannot_read(directory, exc) from exc
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
    config = load_json_object(config_path)
    tensors: list[TensorRecord] = []
    files: list[ModelFile] = [
        ModelFile(path=str(config_path.resolve()), size_bytes=config_path.stat().st_size)
    ]
    shard_paths = _safetensors_files(directory)
    for shard in shard_paths:
        if not present(shard):
            raise ModelError(f"{shard} is listed in the index but missing.", hint="Finish the download.")
        tensors.extend(read_local(shard))  # refuses a FIFO, a device or a directory named *.safetensors
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
    config = load_json_object(path)
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
    require_regular(path)  # a FIFO or a device, whatever its name, is refused before it is opened
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return resolve_gguf_file(path, ref)
    if suffix == ".json":
        return resolve_config_file(path, ref)
    if suffix == ".safetensors":
        return resolve_directory(path.parent, ref)
    # Unknown extension: sniff the magic rather than trusting the name.
    with open_regular(path) as fh:
        try:
            magic = fh.read(4)
        except OSError as exc:
            raise cannot_read(path, exc) from exc
    if magic == b"GGUF":
        return resolve_gguf_file(path, ref)
    raise ModelError(
        f"{path} is neither a model directory, a config.json nor a .gguf file.", hint="Check the path."
    )
