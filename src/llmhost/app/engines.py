"""`llmhost engines` and `doctor`'s engine half as use cases: what every engine says about this machine,
and installing one. Nothing here prints: the installer's progress goes to `log`."""

from __future__ import annotations

from collections.abc import Callable

from llmhost.engines.base import EngineStatus
from llmhost.errors import UsageError
from llmhost.hardware.models import Hardware


def engine_statuses(hardware: Hardware) -> list[EngineStatus]:
    """Every runtime of every registered engine on `hardware`: installed, usable, and why not (an engine
    module that fails to import is reported, not raised)."""
    from llmhost.engines.registry import ENGINE_MODULES, get_engine

    statuses: list[EngineStatus] = []
    for name in ENGINE_MODULES:
        try:
            statuses.extend(get_engine(name).status(hardware))
        except (ImportError, AttributeError) as exc:
            statuses.append(
                EngineStatus(
                    name=name,
                    runtime=name,
                    installed=False,
                    usable=False,
                    reason=f"engine module not available ({exc}).",
                )
            )
    return statuses


def install_engine(name: str, *, force: bool = False, log: Callable[[str], None]) -> str:
    """Install `name` (one an engine lists as `installable`) through its engine; where it is (a binary
    or a virtualenv)."""
    from llmhost.engines.registry import get_engine, installable

    owners = installable()
    if name not in owners:
        raise UsageError(f"Unknown engine {name!r} to install.", hint=f"Choose one of: {', '.join(owners)}.")
    return get_engine(owners[name]).install(name, force=force, log=log)
