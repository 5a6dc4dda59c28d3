"""Exports of real plans (the same `prepare()` as `serve --dry-run`), and the targets' own validators."""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmhost.export.models import ExportSource

CONFIGS = Path(__file__).parent.parent / "fixtures" / "configs"
LLAMA_8B = CONFIGS / "meta-llama--Llama-3.1-8B-Instruct.json"
LLAMA_70B = CONFIGS / "meta-llama--Llama-3.1-70B-Instruct.json"


def source(ref: str | Path, *, auth: bool = False, hub_id: str | None = None, **options: Any) -> ExportSource:
    """Plan `ref` as `llmhost export` does. `hub_id`: the Hub repo the config.json fixture was read from
    (a Hub model plans from the same config.json; KServe and Ray Serve then load it by id)."""
    from llmhost.app.export import build_source

    got = build_source(str(ref), options, auth=auth, command="llmhost export (test)")
    if hub_id is not None:
        got = got.model_copy(update={"candidate": got.candidate.model_copy(update={"model_source": hub_id})})
    return got


@pytest.fixture(scope="session")
def plans(tiny_gguf: Path) -> dict[str, ExportSource]:
    """The demo model on this CPU, an 8B on 1x H100 and a 70B on 2x H100 (what-if hardware)."""
    return {
        "demo-cpu": source(tiny_gguf),
        "8b-h100": source(LLAMA_8B, hardware="h100-80gb", hub_id="meta-llama/Llama-3.1-8B-Instruct"),
        "70b-2xh100": source(LLAMA_70B, hardware="h100-80gb:2", hub_id="meta-llama/Llama-3.1-70B-Instruct"),
    }


@functools.cache
def crd_validator(path: Path) -> Any:
    """A validator for the strict (`strict`) schema at `path`, the schema itself checked once:
    `jsonschema.validate` checks it on every call, a third of a second for KServe's CRD."""
    import jsonschema

    schema = strict(json.loads(path.read_text()))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever an object lists its properties: what
    `kubectl apply --validate=strict` does with a CRD (an unknown field fails instead of being pruned)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="package")  # gone before later folders check for stray children
def vllm_parse() -> Iterator[Callable[[list[list[str]], list[dict[str, Any]]], list[str]]]:
    """Check argvs with vLLM's own `vllm serve` parser and engine-kwargs dicts against vLLM's
    `AsyncEngineArgs`, in the engine's virtualenv. One process for tests/export (package scope: it exits
    before later folders check that no child is left), fed a JSON line per call (importing vLLM takes
    half a minute here). Returns one error line per bad input, "" per good."""
    from llmhost.engines import vllm_env

    runtime = vllm_env.find_runtime()
    if runtime is None:
        pytest.skip("vLLM's engine virtualenv is not installed (`llmhost engines install vllm`)")
    script = r"""
import contextlib, dataclasses, io, json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.engine.arg_utils import AsyncEngineArgs
fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    todo = json.loads(line)
    out = []
    for argv in todo["argvs"]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
            out.append("")
        except SystemExit:
            out.append(err.getvalue().strip().splitlines()[-1])
    for kwargs in todo["kwargs"]:
        unknown = sorted(set(kwargs) - fields)
        out.append(f"not AsyncEngineArgs fields: {unknown}" if unknown else "")
    print(json.dumps(out), flush=True)
"""
    proc = subprocess.Popen(
        [runtime.python, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def reply() -> Any:
        # vLLM logs to stdout too (JSON lines of its own): the answer is the last line that parses
        # as our reply, a string ("ready") or a list.
        for line in proc.stdout or ():
            try:
                got = json.loads(line)
            except ValueError:
                continue
            if isinstance(got, (str, list)):
                return got
        raise AssertionError(f"the vLLM parser process exited ({proc.wait()})")

    assert reply() == "ready"

    def check(argvs: list[list[str]], kwargs: list[dict[str, Any]]) -> list[str]:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"argvs": argvs, "kwargs": kwargs}) + "\n")
        proc.stdin.flush()
        result: list[str] = reply()
        return result

    yield check
    proc.stdin.close()
    proc.wait(timeout=60)
