"""How fast `llmhost plan` answers for a local GGUF, a local HF model dir, and a warm Hub cache.

Issue 3's target: `plan` on a cached repo or a local file answers in under 1 s, cold and warm (issue
14). The GGUF a first run serves comes first: the real Gemma 3 270M when installed in llmhost's model
cache, else the generated demo GGUF. This prints, for each input, the wall-clock median of
`llmhost plan <ref> --json` run as a fresh process (what a user waits for; for a GGUF the cold first
plan of the file, which runs llama.cpp's no-alloc dry run for the compute buffer in a child, the warm
plan that reads its cached answer, and a plan with the dry run off), the same median for
`python -c pass` and `import llmhost.cli` (the floor under it), the in-process phases (import of
llmhost.cli, resolve, detect, make_plan, rendering) measured in a fresh interpreter, and the ratio to
the 1 s target. Then `python -X importtime` top offenders for the first GGUF case.

Inputs are generated here: a llama GGUF (llmhost.demo_model.write_llama_gguf), a model dir with a real
config.json (tests/fixtures/configs) and a safetensors file listing its real tensor table (zero data,
sparse on disk), and a repo on the fake Hub (tests/support/hubserver.py, real huggingface_hub client)
resolved once online into a temporary HF_HOME, then timed with HF_HUB_OFFLINE=1.

Noisy machines: figures are medians of RUNS runs; nothing here asserts a speed.
    python benchmarks/plan_speed.py [--runs N] [--against SRC [--only-against]]

`--against SRC` (another checkout's `src`, e.g. `git archive REV src | tar -x -C /tmp/before`) first
times the served GGUF's cold and warm `plan` for that tree and this one, alternating run by run, so a
before/after comparison sees the same machine load.

PYTHONDONTWRITEBYTECODE is dropped from the children's environment: with it, every run recompiles
llmhost's sources (~0.4 s), which no installed copy does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The one path line: tests/ for `support` (tests/support/: the fake Hub and model writers the tests use).
sys.path.insert(0, str(ROOT / "tests"))

TARGET_S = 1.0
CONFIG = "meta-llama--Llama-3.2-1B-Instruct"
HUB_CONFIG = "meta-llama--Llama-3.1-8B-Instruct"
HUB_REPO = "meta-llama/Llama-3.1-8B-Instruct"

# Runs in a fresh interpreter: times each phase of `plan` in process, prints JSON on the last line.
PHASES = r"""
import io, json, sys, time
t0 = time.perf_counter()
import llmhost.cli
t1 = time.perf_counter()
from llmhost.models import resolve
spec = resolve(sys.argv[1])
t2 = time.perf_counter()
from llmhost.hardware import detect
hw = detect()
t3 = time.perf_counter()
from llmhost.plan import make_plan
from llmhost.plan.models import PlanRequest
plan = make_plan(spec, hw, PlanRequest())
t4 = time.perf_counter()
from llmhost.cli._output import to_json
to_json(plan)
t5 = time.perf_counter()
from rich.console import Console
from llmhost.cli.plan import render_plan
render_plan(Console(file=io.StringIO(), width=120), plan)
t6 = time.perf_counter()
print(json.dumps({"import llmhost.cli": t1 - t0, "resolve": t2 - t1, "detect": t3 - t2,
                  "make_plan": t4 - t3, "render --json": t5 - t4, "render table": t6 - t5}))
"""


def llmhost_argv() -> list[str]:
    script = Path(sys.executable).with_name("llmhost")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmhost"]


def median_wall(
    argv: list[str],
    env: dict[str, str],
    runs: int,
    ok: tuple[int, ...] = (0,),
    before_each: Callable[[], None] | None = None,
) -> float:
    times: list[float] = []
    for _ in range(runs):
        if before_each is not None:
            before_each()
        started = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if proc.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return statistics.median(times)


def median_phases(ref: str, env: dict[str, str], runs: int) -> dict[str, float]:
    samples: list[dict[str, float]] = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", PHASES, ref], env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"phases for {ref} failed: {proc.stderr.strip()[-500:]}")
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def make_gguf(tmp: Path) -> Path:
    from llmhost.demo_model import write_llama_gguf

    return write_llama_gguf(
        tmp / "bench-llama.gguf", n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_vocab=1000
    )


def make_big_vocab_gguf(tmp: Path) -> Path:
    """A Qwen-sized vocabulary (152k tokens): what the llama.cpp dry run's model load costs for real."""
    from llmhost.demo_model import write_llama_gguf

    return write_llama_gguf(
        tmp / "bench-llama-152k.gguf", n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_vocab=152064
    )


def served_gguf(tmp: Path) -> tuple[str, Path]:
    """The GGUF a first run serves: the real Gemma 3 270M when installed in llmhost's model cache, else
    the generated demo model (`make demo`'s), written into `tmp`."""
    from llmhost.cache import cache_dir

    real = sorted((cache_dir() / "models").glob("gemma-*/*.gguf"))
    if real:
        return f"{real[0].stem} (installed)", real[0]
    from llmhost.demo_model import ensure_demo_model

    return "demo GGUF (gemma not installed)", ensure_demo_model(tmp / "demo")


def make_hf_dir(tmp: Path) -> Path:
    from support.model_makers import llama_tensors, write_safetensors

    config = json.loads((ROOT / "tests" / "fixtures" / "configs" / f"{CONFIG}.json").read_text())
    model_dir = tmp / "Llama-3.2-1B-Instruct"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(config))
    write_safetensors(model_dir / "model.safetensors", llama_tensors(config))  # sparse: header only
    return model_dir


def warm_hub_cache(tmp: Path, env: dict[str, str]) -> dict[str, str] | None:
    """Serve HUB_REPO on the fake Hub, resolve it once online, return the env for offline runs."""
    try:
        from support.hubserver import FakeHub
        from support.model_makers import hub_safetensors_repo
    except ImportError as exc:  # the tests folder is not there (an installed package)
        print(f"hub case skipped: {exc}")
        return None
    config = json.loads((ROOT / "tests" / "fixtures" / "configs" / f"{HUB_CONFIG}.json").read_text())
    files = hub_safetensors_repo(config, shards=4)
    hub = FakeHub()
    hub.add_repo(HUB_REPO, files)
    hub.start()
    try:
        online = {**env, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf_home")}
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
            online.pop(var, None)
        proc = subprocess.run(
            [*llmhost_argv(), "plan", HUB_REPO, "--json"], env=online, capture_output=True, text=True
        )
        if proc.returncode not in (0, 3):
            print(f"hub case skipped: warm-up exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
            return None
        print(f"fake Hub warm-up: {hub.bytes_served} bytes served in {len(hub.requests)} requests")
    finally:
        hub.stop()
    return {**online, "HF_HUB_OFFLINE": "1"}  # the Hub is gone: every read must come from the cache


def import_offenders(ref: str, env: dict[str, str], top: int = 15) -> None:
    """`python -X importtime` of one `plan` run: self time summed per top-level package, and the slowest
    single modules, so the next thing to make lazy is obvious."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llmhost", "plan", ref, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    per_package: dict[str, int] = {}
    cumulative: list[tuple[int, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, self_us, cum_us, name = (part.strip() for part in line.replace("import time:", "|").split("|"))
        root = name.split(".")[0]
        per_package[root] = per_package.get(root, 0) + int(self_us)
        cumulative.append((int(cum_us), name))
    total = sum(per_package.values())
    print(f"\n-X importtime for `plan {Path(ref).name} --json`: {total / 1000:.0f} ms of imports in all")
    print(f"  {'package (self time summed)':<34}{'ms':>8}")
    for name, us in sorted(per_package.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {name:<34}{us / 1000:>8.1f}")
    print(f"  {'slowest imports (cumulative)':<34}{'ms':>8}")
    for us, name in sorted(cumulative, reverse=True)[:top]:
        print(f"  {name:<34}{us / 1000:>8.1f}")


def side_by_side(other_src: Path, label: str, gguf: Path, env: dict[str, str], runs: int, tmp: Path) -> None:
    """Cold (dry-run cache emptied) and warm `plan GGUF --json` for `other_src` and this tree, run by run
    in turn: both see the same load on a shared machine."""
    import resource

    trees = {"against": other_src.resolve(), "this tree": ROOT / "src"}
    keys = [(t, k, m) for t in trees for k in ("cold", "warm") for m in ("wall", "cpu")]
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key in keys}
    for _ in range(runs):
        for tree, src in trees.items():
            tree_env = {**env, "PYTHONPATH": str(src), "LLMHOST_CACHE_DIR": str(tmp / "side-cache")}
            shutil.rmtree(tmp / "side-cache", ignore_errors=True)
            for kind in ("cold", "warm"):  # the cold run leaves the dry-run answer the warm one reads
                argv = [sys.executable, "-m", "llmhost", "plan", str(gguf), "--json"]
                # CPU time (user + system, the dry-run child included) moves less with the machine's
                # load than the wall clock does.
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                times[(tree, kind, "wall")].append(median_wall(argv, tree_env, 1, ok=(0, 3)))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                times[(tree, kind, "cpu")].append(cpu)
    print(f"\nside by side, {label}, median of {runs} alternating fresh processes (against: {other_src})")
    for kind in ("cold", "warm"):
        row = "   ".join(
            f"{tree} {statistics.median(times[(tree, kind, 'wall')]):.3f} s wall, "
            f"{statistics.median(times[(tree, kind, 'cpu')]):.3f} s CPU"
            for tree in trees
        )
        print(f"  plan {kind:<5} {row}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (median is printed)")
    parser.add_argument("--against", type=Path, help="another tree's src/ to time side by side with this one")
    parser.add_argument("--only-against", action="store_true", help="with --against: print only that table")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="llmhost-plan-speed-"))
    # Its own cache dir: the llama.cpp dry-run answers for a local GGUF are cached there, and the cold
    # rows below empty it before every run.
    env = {**os.environ, "NO_COLOR": "1", "LLMHOST_CACHE_DIR": str(tmp / "cache")}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        gguf, big_gguf = str(make_gguf(tmp)), str(make_big_vocab_gguf(tmp))
        served_label, served = served_gguf(tmp)
        if args.against is not None:
            side_by_side(args.against, served_label, served, env, args.runs, tmp)
            if args.only_against:
                return 0
        cases: list[tuple[str, str, dict[str, str]]] = [
            (served_label, str(served), env),
            ("local GGUF", gguf, env),
            ("local GGUF, 152k vocab", big_gguf, env),
            ("local HF dir (1B)", str(make_hf_dir(tmp)), env),
        ]
        hub_env = warm_hub_cache(tmp, env)
        if hub_env is not None:
            cases.append(("cached Hub repo (8B, offline)", HUB_REPO, hub_env))

        floor_python = median_wall([sys.executable, "-c", "pass"], env, args.runs)
        floor_import = median_wall([sys.executable, "-c", "import llmhost.cli"], env, args.runs)
        print(f"\nwall clock, median of {args.runs} fresh processes (target {TARGET_S:.1f} s)")
        print(f"  {'python -c pass':<42}{floor_python:>8.3f} s")
        print(f"  {'python -c import llmhost.cli':<42}{floor_import:>8.3f} s")

        def forget_dry_runs() -> None:
            shutil.rmtree(tmp / "cache" / "llamacpp-dry-run", ignore_errors=True)

        # A local GGUF planned for this CPU asks the installed llama.cpp for its compute buffer (a child
        # process, a no-alloc load): the first plan of a file pays for it, later ones read the cache.
        gguf_cases = ((served_label, str(served)), ("local GGUF", gguf), ("local GGUF, 152k vocab", big_gguf))
        for label, ref in gguf_cases:
            cold = median_wall(
                [*llmhost_argv(), "plan", ref, "--json"],
                env,
                args.runs,
                ok=(0, 3),
                before_each=forget_dry_runs,
            )
            off = median_wall(
                [*llmhost_argv(), "plan", ref, "--json"], {**env, "LLMHOST_LLAMACPP_DRY_RUN": "0"}, args.runs
            )
            for what, wall in ((", cold dry run", cold), (", dry run off", off)):
                print(f"  {'plan ' + label + what:<42}{wall:>8.3f} s   {wall / TARGET_S:.2f}x the 1 s target")
        # The cold rows left each GGUF's dry-run answer in the cache: these runs are warm.
        rows: list[tuple[str, float, dict[str, float]]] = []
        for label, ref, case_env in cases:
            wall = median_wall([*llmhost_argv(), "plan", ref, "--json"], case_env, args.runs, ok=(0, 3))
            rows.append((label, wall, median_phases(ref, case_env, args.runs)))
            warm = ", warm" if ref.endswith(".gguf") else ""
            print(f"  {'plan ' + label + warm:<42}{wall:>8.3f} s   {wall / TARGET_S:.2f}x the 1 s target")

        phase_names = list(rows[0][2])
        print(f"\nin-process phases, ms (median of {args.runs}, fresh interpreter each)")
        print(f"  {'phase':<20}" + "".join(f"{label[:24]:>26}" for label, _, _ in rows))
        for phase in phase_names:
            print(f"  {phase:<20}" + "".join(f"{p[phase] * 1000:>26.1f}" for _, _, p in rows))
        print(f"  {'sum':<20}" + "".join(f"{sum(p.values()) * 1000:>26.1f}" for _, _, p in rows))

        import_offenders(cases[0][1], env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
