"""What an export is rendered from, and what it renders to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmhost.contract import Contract
from llmhost.engines.base import LaunchSpec
from llmhost.hardware.models import Hardware
from llmhost.plan.models import Candidate

Target = Literal[
    "systemd", "compose", "kubernetes", "kserve", "kserve-llm", "ray-serve", "litellm", "vllm-cluster"
]


class ExportSource(Contract):
    """One prepared deployment: the plan's candidate and the engine command `serve` would run."""

    llmhost_version: str
    name: str = Field(description="Deployment name (systemd unit, compose service, Kubernetes objects).")
    model: str = Field(description="The model reference as the user gave it.")
    served_model_name: str
    candidate: Candidate
    hardware: Hardware = Field(description="The node type the plan was made for.")
    launch: LaunchSpec = Field(description="The engine command `serve` builds for this candidate.")
    host: str
    port: int
    auth: bool = Field(description="Clients must send an API key (the key itself is never here).")
    api_key_env: str = Field(
        default="LLMHOST_API_KEY", description="The env var llmhost reads the key from (never its value)."
    )
    serve_args: list[str] = Field(
        description="`llmhost serve` arguments that reproduce this plan (model first, options pinned)."
    )
    llmhost_argv: list[str] = Field(
        default_factory=lambda: ["llmhost"],
        description="How to run llmhost on the target node (systemd needs an absolute path).",
    )
    command: str = Field(
        description="The `llmhost export ...` command line that rendered this, for the header."
    )


class ExportFile(Contract):
    """One rendered file: its name under `-o DIR` and its text."""

    filename: str
    text: str
    mode: int = Field(default=0o644, description="File mode when written (an env file template: 0600).")
