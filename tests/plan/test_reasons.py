"""Structured reasons (issue 9): every code's fields are checked, its sentence rendered from them, and
nothing in src/ reads a reason's sentence back (no regex, no split, no substring test over it)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import llmhost
from llmhost.plan import PlanRequest, make_plan
from llmhost.plan.models import Candidate, Plan
from llmhost.plan.reasons import NONE, REGISTRY, FieldType, Reason, ReasonCode, Scalar, template_fields
from support.llmhost_test_specs import dense_spec, gpu, h100, machine

SRC = Path(llmhost.__file__).parent
PLANNING = Path(__file__).parents[2] / "docs" / "planning.md"


def _samples(expected: FieldType) -> list[Scalar]:
    """Values of this type, each alternative once (a template must render them all)."""
    if isinstance(expected, frozenset):
        return sorted(expected)
    out: list[Scalar] = []
    for t in expected if isinstance(expected, tuple) else (expected,):
        out += {str: ["org/Model-GGUF"], int: [0, 3], float: [0.0, 12.34], bool: [True, False], NONE: [None]}[
            t
        ]
    return out


def _field_sets(code: ReasonCode) -> list[dict[str, Scalar]]:
    spec = REGISTRY[code].fields
    base = {name: _samples(t)[-1] for name, t in spec.items()}
    sets = [base]
    for name, t in spec.items():
        sets += [{**base, name: value} for value in _samples(t)]
    return sets


def test_every_code_has_one_registry_entry() -> None:
    assert set(REGISTRY) == set(ReasonCode)
    assert len({c.value for c in ReasonCode}) == len(ReasonCode)


@pytest.mark.parametrize("code", list(ReasonCode))
def test_every_code_renders_from_its_fields_and_refuses_others(code: ReasonCode) -> None:
    spec = REGISTRY[code]
    if isinstance(spec.render, str):  # a template names exactly the declared fields
        assert template_fields(spec.render) == set(spec.fields)
    for fields in _field_sets(code):
        reason = Reason.of(code, **fields)
        assert reason.level == spec.level and reason.fields == fields
        assert reason.message and "{" not in reason.message and "}" not in reason.message
        assert Reason.model_validate_json(reason.model_dump_json()) == reason  # read back from --json
    base = _field_sets(code)[0]
    with pytest.raises(ValidationError, match="unknown fields"):
        Reason.of(code, **base, surplus=1)
    for name in spec.fields:
        with pytest.raises(ValidationError, match="missing fields"):
            Reason.of(code, **{k: v for k, v in base.items() if k != name})
        t = spec.fields[name]
        takes_text = t is str or (isinstance(t, tuple) and str in t)
        wrong: Any = (
            [1.5] if takes_text else "not-a-choice"
        )  # a list is no scalar; the rest take no free text
        with pytest.raises(ValidationError, match=f"field {name}="):
            Reason.of(code, **{**base, name: wrong})


def test_level_and_message_must_be_what_the_fields_render() -> None:
    good = Reason.of(ReasonCode.TENSOR_PARALLEL, tp=2).model_dump()
    assert good == {
        "code": "tensor_parallel",
        "level": "info",
        "fields": {"tp": 2},
        "message": "tensor parallel 2: weights and KV heads split over 2 GPUs",
    }
    for tampered in ({"message": "tensor parallel 4"}, {"level": "blocker"}, {"code": "no_such_code"}):
        with pytest.raises(ValidationError):
            Reason.model_validate({**good, **tampered})
    with pytest.raises(ValidationError):  # an int field refuses a bool (JSON true is not 1 here)
        Reason.of(ReasonCode.TENSOR_PARALLEL, tp=True)


def test_byte_fields_render_as_the_plan_always_printed_them() -> None:
    gib = 1024**3
    ram = Reason.of(ReasonCode.NEEDS_RAM, need_bytes=int(17.25 * gib), available_bytes=12 * gib)
    assert ram.message == "needs 17.2 GiB of RAM, 12.0 GiB available"
    small = Reason.of(ReasonCode.MLX_DOES_NOT_FIT, need_bytes=300 * 1024**2, available_bytes=2 * gib)
    assert small.message == "does not fit: needs 300.0 MiB, 2.0 GiB available"


def _plan_with_advice() -> Plan:
    return make_plan(dense_spec(), machine([gpu("RTX 4090", 24, cc="8.9")]), PlanRequest(context=131072))


def test_plan_json_reads_back_and_its_rendered_lists_are_checked() -> None:
    plan = _plan_with_advice()
    assert plan.advice and plan.advice_detail and plan.candidates
    data = json.loads(plan.model_dump_json())
    assert data["advice"] == [a["message"] for a in data["advice_detail"]]
    for c in data["candidates"]:
        assert c["reasons"] == [r["message"] for r in c["reasons_detail"]]
        assert {r["level"] for r in c["reasons_detail"]} <= {"info", "warning", "blocker"}
    assert Plan.model_validate(data) == plan
    bad = json.loads(plan.model_dump_json())
    bad["candidates"][0]["reasons"][0] = "a sentence no code renders"
    with pytest.raises(ValidationError, match="reasons must be the messages of reasons_detail"):
        Plan.model_validate(bad)
    bad = json.loads(plan.model_dump_json())
    bad["advice"] = ["other advice"]
    with pytest.raises(ValidationError, match="advice must be the messages of advice_detail"):
        Plan.model_validate(bad)


def test_the_rendered_lists_cannot_be_updated_behind_the_details_back() -> None:
    plan = _plan_with_advice()
    with pytest.raises(TypeError, match="update reasons_detail"):
        plan.candidates[0].model_copy(update={"reasons": ["lost"]})
    with pytest.raises(TypeError, match="update advice_detail"):
        plan.model_copy(update={"advice": ["lost"]})
    extra = Reason.of(ReasonCode.CPU_ONLY)
    c = plan.candidates[0].model_copy(update={"reasons_detail": [extra]})
    assert c.reasons == ["CPU only"] and c.reason_codes == [ReasonCode.CPU_ONLY]


def test_advice_takes_the_gguf_sibling_from_the_reason_fields() -> None:
    """The GGUF sibling's repo reaches the advice through `needs_gguf_sibling`'s `repo` field."""
    from llmhost.models.spec import QuantizedVariant

    sibling = [QuantizedVariant(repo_id="org/Tricky (v2): GGUF", method="gguf", downloads=1)]
    mac = machine([], os="darwin", arch="arm64", ram_gib=32)
    plan = make_plan(dense_spec(), mac, PlanRequest(context=8192), siblings=sibling)
    (advice,) = [a for a in plan.advice_detail if a.code == ReasonCode.ADVICE_GGUF_CONVERSION]
    assert advice.fields["repo"] == "org/Tricky (v2): GGUF"
    # The sentence parse this replaced cut a repo id at its first ": " or " (".
    assert f"`llmhost plan org/Tricky (v2): GGUF:{advice.fields['quantization']}`." in advice.message


# ------------------------------------------------------------------ no sentence parsing in src/

_PARSING_METHODS = {"split", "rsplit", "partition", "rpartition", "startswith", "endswith", "find", "index"}


def _reads_rendered(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in ("reasons", "advice") for n in ast.walk(node))


def _parses_text(node: ast.AST) -> list[str]:
    found = []
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            owner = n.func.value
            if isinstance(owner, ast.Name) and owner.id == "re":
                found.append(f"re.{n.func.attr}")
            elif n.func.attr in _PARSING_METHODS:
                found.append(f".{n.func.attr}()")
        if isinstance(n, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in n.ops):
            if isinstance(n.left, ast.Constant) and isinstance(n.left.value, str):
                found.append(f"{n.left.value!r} in ...")
    return found


def _own_parts(stmt: ast.stmt) -> list[ast.AST]:
    """A statement's own expressions: a compound statement's header, not the statements in its body."""
    if isinstance(stmt, ast.If | ast.While):
        return [stmt.test]
    if isinstance(stmt, ast.For | ast.AsyncFor):
        return [stmt.iter]
    if isinstance(stmt, ast.With | ast.AsyncWith):
        return [item.context_expr for item in stmt.items]
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Try | ast.Match):
        return []
    return [stmt]


def sentence_parsing(root: Path) -> list[str]:
    """Statements of src/ that read `.reasons` / `.advice` (the rendered sentences) and parse text; the
    body of a `for` over them counts as reading them."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.stmt):
                continue
            for part in _own_parts(node):
                if _reads_rendered(part) and (parsed := _parses_text(part)):
                    hits.append(f"{path.relative_to(root)}:{node.lineno}: {', '.join(parsed)}")
            if isinstance(node, ast.For) and _reads_rendered(node.iter):
                for stmt in node.body:
                    if parsed := _parses_text(stmt):
                        hits.append(f"{path.relative_to(root)}:{stmt.lineno}: {', '.join(parsed)}")
    return hits


def test_no_code_in_src_parses_a_reason_sentence() -> None:
    assert sentence_parsing(SRC) == []


def test_the_sentence_check_finds_what_advice_and_multinode_used_to_do(tmp_path: Path) -> None:
    # The two parses this change removed, as they were written: the check must catch both.
    (tmp_path / "old.py").write_text(
        "def advise(best, c):\n"
        '    gguf = next((r for r in best.reasons if "llmhost plan" in r), None)\n'
        '    reasons = [r for r in c.reasons if not r.startswith("pipeline parallel")]\n'
        "    for r in c.reasons:\n"
        "        repo = r.split(': ', 1)[1]\n"
        "    import re\n"
        "    return re.search('x', ' '.join(best.advice))\n"
    )
    assert sorted(int(h.split(":")[1]) for h in sentence_parsing(tmp_path)) == [2, 3, 5, 7]


# ------------------------------------------------------------------ docs


def _documented_codes() -> dict[str, str]:
    text = PLANNING.read_text(encoding="utf-8")
    section = text.split("## Reason codes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_docs_list_every_code_with_its_level() -> None:
    documented = _documented_codes()
    assert set(documented) == {c.value for c in ReasonCode}
    for code, level in documented.items():
        assert level == REGISTRY[ReasonCode(code)].level, code


def test_the_docs_table_is_generated_from_the_registry() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_reason_codes", PLANNING.parent / "_reason_codes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.generate()
    assert table in PLANNING.read_text(encoding="utf-8"), "stale: run `cog -r docs/planning.md`"
    # A function-rendered sentence is documented by its `about`; a template documents itself.
    for code, entry in REGISTRY.items():
        assert bool(entry.about) != isinstance(entry.render, str), code


def test_candidates_built_anywhere_carry_codes_not_only_sentences() -> None:
    plan = make_plan(dense_spec(), machine([h100()]), PlanRequest(context=8192))
    chosen = plan.chosen_candidate
    assert isinstance(chosen, Candidate)
    assert chosen.reason_codes[0] == ReasonCode.CHOSEN_FOR_QUALITY
    assert ReasonCode.KV_CACHE_SEQUENCES in chosen.reason_codes
    fields: dict[str, Any] = chosen.reasons_detail[0].fields
    assert fields == {"quantization": chosen.quantization}
