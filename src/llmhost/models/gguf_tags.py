"""Group a GGUF repo's files into quantization variants by the tag in their names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from llmhost.models.refs import SPLIT_RE
from llmhost.models.spec import GGUFVariant, ModelFile

# Longest alternatives first so "Q4_K_M" wins over "Q4_K".
_TAG_RE = re.compile(
    r"(?:^|[-_.])((?:UD-)?(?:I?Q[1-8]_(?:K_(?:XL|[SML])|K|[01]|NL|XXS|XS|S|M|L)|IQ[1-4]_(?:XXS|XS|S|M|NL)"
    r"|TQ[12]_0|MXFP4(?:_MOE)?|BF16|F16|F32|FP16|FP32))(?=[-_.]|$)",
    re.IGNORECASE,
)
# When the user names no tag and the repo lacks Q4_K_M, take the first of these that exists.
PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q6_K", "Q8_0", "Q3_K_M", "BF16", "F16")


@dataclass(frozen=True)
class _File:
    path: str
    size: int | None


def tag_of(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    name = SPLIT_RE.sub("", name)
    name = re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    matches = _TAG_RE.findall(name)
    if matches:
        return str(matches[-1]).upper()
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    found = _TAG_RE.findall(folder.replace("/", "-"))
    return str(found[-1]).upper() if found else None


def variants(
    files: Iterable[tuple[str, int | None]], url_of: dict[str, str] | None = None
) -> list[GGUFVariant]:
    groups: dict[str, list[_File]] = {}
    for path, size in files:
        low = path.lower()
        if not low.endswith(".gguf") or "mmproj" in low or low.rsplit("/", 1)[-1].startswith("imatrix"):
            continue
        tag = tag_of(path)
        if tag is None:
            continue
        groups.setdefault(tag, []).append(_File(path, size))
    out: list[GGUFVariant] = []
    for tag, group in groups.items():
        group.sort(key=lambda f: f.path)
        out.append(
            GGUFVariant(
                tag=tag,
                files=[
                    ModelFile(path=f.path, size_bytes=f.size, url=(url_of or {}).get(f.path)) for f in group
                ],
                size_bytes=sum(f.size or 0 for f in group),
            )
        )
    out.sort(key=lambda v: v.size_bytes)
    return out


def pick(variant_list: list[GGUFVariant], tag: str, *, explicit: bool) -> GGUFVariant | None:
    by_tag = {v.tag: v for v in variant_list}
    if tag.upper() in by_tag:
        return by_tag[tag.upper()]
    if explicit:
        return None
    for candidate in PREFERENCE:
        if candidate in by_tag:
            return by_tag[candidate]
    return variant_list[0] if variant_list else None
