"""Export: the plan `serve` would run here, rendered for a platform that runs it elsewhere.

Pure rendering (no processes, no network, no files): an `ExportSource` (the prepared deployment: plan
candidate, engine launch spec, name, port, key handling) in, text out. `render(target, source)` is the
one entry point; the CLI (`llmhost export`) builds the source through the same `prepare()` as
`serve --dry-run` and writes the text to stdout or `-o DIR`.

Targets: systemd, compose, kubernetes, kserve, ray-serve, litellm. Secrets are never rendered: an API
key or Hub token is referenced by env var, env file, Kubernetes Secret or `os.environ/...`.
"""

from __future__ import annotations

from llmhost.export.models import ExportFile, ExportSource, Target
from llmhost.export.render import TARGETS, render

__all__ = ["TARGETS", "ExportFile", "ExportSource", "Target", "render"]
