"""scripts/fuzz.py counts what its targets do: crashes, hangs and memory blow-ups are each caught,
counted, and their inputs saved for replay; clean refusals and passes are not failures."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The fake target's verdict per case comes from the case's first byte, so the test can predict it.
TARGET = textwrap.dedent(
    """
    CASES = 24

    def seeds(workdir):
        return [b"seed"]

    def mutate(data, rng):
        return bytes([rng.randrange(100)]) + data

    def check(data, workdir):
        b = data[0]
        if b < 6:
            raise ValueError("a bug")
        if b < 10:
            while True:
                pass
        if b < 14:
            bytearray(1 << 40)
        if b < 50:
            from llmhost.errors import ModelError
            raise ModelError("refused")
    """
)


def _expected(cases: int, seed: int) -> dict[str, int]:
    counts = {"crash": 0, "hang": 0, "memory": 0, "refused": 0, "ok": 0}
    for i in range(cases):
        b = random.Random(f"{seed}:{i}").randrange(100)
        kind = (
            "crash" if b < 6 else "hang" if b < 10 else "memory" if b < 14 else "refused" if b < 50 else "ok"
        )
        counts[kind] += 1
    return counts


@pytest.mark.timeout(120)
def test_driver_counts_crashes_hangs_and_memory_and_keeps_their_inputs(tmp_path):
    (tmp_path / "fuzz_fake.py").write_text(TARGET)
    expected = _expected(24, 13)
    assert expected["hang"] and expected["crash"] and expected["memory"], (
        expected
    )  # the seed covers each kind
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "fuzz.py"),
            "fake",
            "--targets-dir",
            str(tmp_path),
            "--jobs",
            "2",
            "--timeout",
            "1.5",
            "--memory-mib",
            "1024",
            "--seed",
            "13",
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("fake "))
    _, cases, _rate, ok, refused, crash, hang, memory = row
    got = {
        "ok": int(ok),
        "refused": int(refused),
        "crash": int(crash),
        "hang": int(hang),
        "memory": int(memory),
    }
    assert int(cases) == 24
    assert got == expected
    saved = sorted(p.name.split("-")[0] for p in (tmp_path / "corpus" / "fake").iterdir())
    # identical inputs share a file name (content hash), so there may be fewer files than failures
    assert set(saved) == {"crash", "hang", "memory"}
