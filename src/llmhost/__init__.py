"""llmhost: a self-hosting control plane for open-weight LLMs."""

from __future__ import annotations

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # importlib.metadata (email, zipfile, csv...) costs tens of ms at every CLI start: read it on first use.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("llmhost")
        except PackageNotFoundError:  # running from a source tree without an install
            found = "0.0.0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
