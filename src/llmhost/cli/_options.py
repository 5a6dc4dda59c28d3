"""Option aliases shared by commands, so the same flag means the same thing everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (the pydantic model) on stdout.")
]
HardwareOpt = Annotated[
    str | None,
    typer.Option(
        "--hardware",
        help="Plan for catalog hardware instead of this machine, e.g. h100-80gb or rtx-4090:2 "
        "(see `llmhost hw --list-catalog`).",
    ),
]
