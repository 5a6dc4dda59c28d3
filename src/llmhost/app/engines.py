"""`llmhost engines` and `doctor`'s engine half as use cases: what every engine says about this machine,
and installing one. Nothing here prints: the installer's progress goes to `log`."""

from __future__ import annotations

from collections.abc import Callable

from llmhost.engine_ids import LLAMA_SERVER, MLX, VLLM
from llmhost.engines.base import EngineStatus
from llmhost.errors import EngineError, UsageError
from llmhost.hardware.models import Hardware

INSTALLABLE = (LLAMA_SERVER, VLLM, MLX)


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
    """Install the engine `name` (one of INSTALLABLE); where it is (a binary or a virtualenv)."""
    if name == LLAMA_SERVER:
        from llmhost.engines.llamacpp_build import build_llama_server
        from llmhost.hardware import detect

        hardware = detect()
        path = build_llama_server(
            has_nvidia=hardware.has_nvidia, is_apple=hardware.is_apple_silicon, force=force, log=log
        )
        return str(path)
    if name == VLLM:
        return _install_vllm(force=force)
    if name == MLX:
        from llmhost.engines import mlx_env

        return str(mlx_env.install(force=force).location)
    raise UsageError(f"Unknown engine {name!r} to install.", hint=f"Choose one of: {', '.join(INSTALLABLE)}.")


def _install_vllm(*, force: bool) -> str:
    try:
        from llmhost.engines import vllm_env
    except ImportError as exc:
        raise EngineError(
            f"The vLLM installer is not available in this llmhost ({exc}).",
            hint="Update llmhost, or install vLLM yourself and put `vllm` on PATH.",
        ) from exc
    install_fn = getattr(vllm_env, "install", None)
    if install_fn is None:
        raise EngineError("llmhost.engines.vllm_env has no install() function.", hint="Update llmhost.")
    result = install_fn(force=force)
    location = getattr(result, "location", None)
    return str(location if location is not None else result)
