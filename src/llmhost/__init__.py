"""llmhost: a self-hosting control plane for open-weight LLMs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmhost")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
