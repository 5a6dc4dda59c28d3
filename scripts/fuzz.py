"""`make fuzz`: the long mutation-fuzz run over llmhost's readers of untrusted files.

    python scripts/fuzz.py                          # every target, its default number of cases
    python scripts/fuzz.py gguf --cases 100000      # one target
    python scripts/fuzz.py config --cases 20000 --jobs 2 --timeout 5 --memory-mib 1024

A target is a module `tests/hostile/fuzz_<name>.py` with:

    seeds(workdir: Path) -> list[bytes]      real-shaped inputs to start from
    mutate(data: bytes, rng: random.Random) -> bytes
    check(data: bytes, workdir: Path) -> None
        feed the bytes to llmhost the way a user's file would reach it; it must return or raise an
        `LlmhostError` with exit code 2. Anything else is a crash.
    CASES: int                               the default number of cases of the long run

Each case runs in a worker process under a memory limit (RLIMIT_AS) and a per-case wall-clock limit
enforced by the parent (a case that overruns is a hang: the worker is killed and replaced). Case i is
made from seed i % len(seeds) with a generator seeded by (--seed, i), so any case is reproducible from
its number alone (`--replay N`). Every input that failed is written to
`tests/hostile/corpus/<target>/`, where the quick fuzz tests in `make test` replay it for ever after.

Prints cases/s and the counts of crashes, hangs and memory blow-ups; exits 1 if any.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Where targets live (and their corpora, under corpus/); --targets-dir moves it (the driver's own test).
HOSTILE = Path(os.environ.get("LLMHOST_FUZZ_TARGETS", ROOT / "tests" / "hostile"))


def _targets() -> list[str]:
    return sorted(p.stem.removeprefix("fuzz_") for p in HOSTILE.glob("fuzz_*.py"))


def _load(name: str) -> Any:
    # tests/ too: targets import the shared test helpers as `support.*` (tests/support/).
    for path in (ROOT / "tests", HOSTILE):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return importlib.import_module(f"fuzz_{name}")


def make_case(target: Any, seeds: list[bytes], base_seed: int, index: int) -> bytes:
    rng = random.Random(f"{base_seed}:{index}")
    return target.mutate(seeds[index % len(seeds)], rng)


def _worker(name: str, base_seed: int, memory_mib: int, tasks: Any, results: Any) -> None:
    import resource

    from llmhost.errors import ExitCode, LlmhostError

    target = _load(name)
    work = Path(tempfile.mkdtemp(prefix=f"llmhost-fuzz-{name}-"))
    seeds = target.seeds(work / "seeds")
    limit = memory_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    results.put(("ready", -1, ""))
    while True:
        index = tasks.get()
        if index is None:
            return
        data = make_case(target, seeds, base_seed, index)
        results.put(("start", index, ""))
        case_dir = work / "case"
        case_dir.mkdir(exist_ok=True)
        try:
            target.check(data, case_dir)
            outcome, detail = "ok", ""
        except LlmhostError as exc:
            if exc.exit_code == ExitCode.BAD_INPUT:
                outcome, detail = "refused", ""
            else:
                outcome, detail = "crash", f"{type(exc).__name__} (exit {exc.exit_code}): {exc}"
        except MemoryError:
            outcome, detail = "memory", "MemoryError"
        except RecursionError:
            outcome, detail = "crash", "RecursionError"
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            outcome, detail = "crash", f"{type(exc).__name__}: {exc} at {tb.filename}:{tb.lineno}"
        for p in case_dir.iterdir():
            if p.is_file() or p.is_symlink() or p.is_fifo():
                p.unlink()
        results.put((outcome, index, detail[:500]))


def _save(name: str, kind: str, data: bytes) -> Path:
    folder = HOSTILE / "corpus" / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def run_target(
    name: str, cases: int, jobs: int, timeout: float, memory_mib: int, seed: int
) -> dict[str, Any]:
    target = _load(name)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = target.seeds(Path(tmp))  # the parent rebuilds a failing case's bytes from its number
    ctx = mp.get_context("spawn")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS threads reserve address space per thread
    results: Any = ctx.Queue()
    counts = {"ok": 0, "refused": 0, "crash": 0, "hang": 0, "memory": 0}
    failures: list[str] = []
    next_index = 0

    def feed(w: dict[str, Any]) -> None:
        nonlocal next_index
        w["index"], w["since"] = (next_index, None) if next_index < cases else (None, None)
        w["tasks"].put(w["index"])
        if w["index"] is not None:
            next_index += 1

    def spawn() -> dict[str, Any]:
        tasks: Any = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(name, seed, memory_mib, tasks, results), daemon=True)
        proc.start()
        w = {"proc": proc, "tasks": tasks, "index": None, "since": None}
        feed(w)
        return w

    def record(kind: str, index: int, detail: str) -> None:
        counts[kind] += 1
        if kind in ("crash", "hang", "memory"):
            path = _save(name, kind, make_case(target, seeds, seed, index))
            failures.append(f"case {index}: {kind}: {detail} -> {path}")

    started = time.monotonic()
    workers = [spawn() for _ in range(jobs)]
    done = 0
    last_report = started
    while done < cases:
        try:
            kind, index, detail = results.get(timeout=0.2)
        except Exception:  # queue.Empty: time to look at the workers
            kind, index, detail = None, -1, ""
        now = time.monotonic()
        owner = next((w for w in workers if w["index"] == index), None)
        if kind == "start" and owner is not None:
            owner["since"] = now
        elif kind not in (None, "ready", "start") and owner is not None:
            record(kind, index, detail)
            done += 1
            feed(owner)
        for i, w in enumerate(workers):
            if w["index"] is None:
                continue
            dead = not w["proc"].is_alive()
            if w["since"] is None:
                if dead:
                    raise RuntimeError(
                        f"a {name} fuzz worker died before its first case (exit {w['proc'].exitcode})"
                    )
                continue
            if dead or now - w["since"] > timeout:
                if not dead:
                    w["proc"].kill()
                w["proc"].join()
                code = w["proc"].exitcode
                kind = "memory" if dead and code in (-9, -6) else "crash" if dead else "hang"
                record(kind, w["index"], f"worker exit {code}" if dead else f"over {timeout:g} s")
                done += 1
                workers[i] = spawn()
        if now - last_report > 30:
            last_report = now
            rate = done / (now - started)
            print(f"  {name}: {done}/{cases} cases, {rate:.0f}/s", file=sys.stderr, flush=True)
    for w in workers:
        if w["proc"].is_alive():
            w["tasks"].put(None)
            w["proc"].join(timeout=5)
            if w["proc"].is_alive():
                w["proc"].kill()
    elapsed = time.monotonic() - started
    return {
        "target": name,
        "cases": done,
        "seconds": elapsed,
        "rate": done / elapsed,
        **counts,
        "failures": failures,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets (default: all of {', '.join(_targets())})")
    parser.add_argument("--cases", type=int, help="cases per target (default: the target's CASES)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it is a hang")
    parser.add_argument("--memory-mib", type=int, default=1536, help="address-space limit per worker")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--replay", type=int, metavar="N", help="rebuild case N and print its traceback")
    parser.add_argument("--targets-dir", type=Path, help="where fuzz_*.py live (default: tests/hostile)")
    args = parser.parse_args(argv)
    if args.targets_dir is not None:
        global HOSTILE
        HOSTILE = args.targets_dir.resolve()
        os.environ["LLMHOST_FUZZ_TARGETS"] = str(HOSTILE)  # spawned workers import from there too
    names = args.targets or _targets()
    if args.replay is not None:
        for name in names:
            target = _load(name)
            with tempfile.TemporaryDirectory() as tmp:
                seeds = target.seeds(Path(tmp) / "seeds")
                data = make_case(target, seeds, args.seed, args.replay)
                (Path(tmp) / "case").mkdir()
                target.check(data, Path(tmp) / "case")
            print(f"{name}: case {args.replay} ({len(data)} bytes) passed")
        return 0
    bad = 0
    heads = ("cases", 8), ("cases/s", 8), ("ok", 7), ("refused", 8), ("crash", 6), ("hang", 5), ("memory", 7)
    print(f"{'target':<10} " + " ".join(f"{h:>{w}}" for h, w in heads))
    for name in names:
        cases = args.cases or _load(name).CASES
        r = run_target(name, cases, args.jobs, args.timeout, args.memory_mib, args.seed)
        print(
            f"{name:<10} {r['cases']:>8} {r['rate']:>8.0f} {r['ok']:>7} {r['refused']:>8} "
            f"{r['crash']:>6} {r['hang']:>5} {r['memory']:>7}",
            flush=True,
        )
        for line in r["failures"][:50]:
            print(f"    {line}")
        bad += r["crash"] + r["hang"] + r["memory"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
