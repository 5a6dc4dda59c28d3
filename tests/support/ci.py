"""Whether the tests run in CI (`CI=true`, as `.ci/run` is called): there a missing engine or tool is a
failure, on a developer machine a skip."""

from __future__ import annotations

import os

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
