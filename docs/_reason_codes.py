"""Generate docs/planning.md's reason-code table from `llmhost.plan.reasons.REGISTRY` (run by cog:
`cog -r docs/planning.md`; tests/plan/test_reasons.py fails when the table is stale)."""

from __future__ import annotations

from llmhost.plan.reasons import REGISTRY, NONE, FieldType


def _type(t: FieldType) -> str:
    if isinstance(t, frozenset):
        return " / ".join(f"`{v}`" for v in sorted(t))
    names = {str: "str", int: "int", float: "float", bool: "bool", NONE: "null"}
    return " or ".join(names[x] for x in (t if isinstance(t, tuple) else (t,)))


def generate() -> str:
    lines = ["| code | level | fields | sentence |", "|---|---|---|---|"]
    for code, spec in REGISTRY.items():
        fields = ", ".join(f"`{name}`: {_type(t)}" for name, t in spec.fields.items()) or "-"
        sentence = spec.sentence.replace("|", "\\|")
        lines.append(f"| `{code.value}` | {spec.level} | {fields} | {sentence} |")
    return "\n".join(lines) + "\n"
