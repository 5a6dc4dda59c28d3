"""One small exception tree. Every failure a user can cause or fix is an `LlmhostError`.

Third-party failures (HTTP, NVML, subprocess, gguf, huggingface_hub) are translated into one of
these at the boundary that calls them (`raise ... from exc`), so the CLI renders every error the
same way: one sentence saying what went wrong and what to do next, and a documented exit code.
"""

from __future__ import annotations


class ExitCode:
    """Exit codes shared by every command (documented in `llmhost --help` and docs/cli.md)."""

    OK = 0
    INTERNAL = 1  # a bug in llmhost: please report it (rerun with --debug for the traceback)
    BAD_INPUT = 2  # bad option, model, file, profile or name: fix the input
    NOTHING_FITS = 3  # `plan`/`serve`: no candidate fits the hardware
    ENGINE_FAILED = 4  # an engine failed to install, start or become ready, or crashed for good
    NOT_FOUND = 5  # no such deployment, engine or file
    BENCH_INCOMPLETE = 6  # `bench` finished with failed requests or could not reach the target
    NETWORK = 7  # the Hub or another remote could not be reached
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODE_HELP = (
    "Exit codes: 0 ok; 1 internal error (rerun with --debug); 2 bad input; 3 nothing fits; "
    "4 engine failed; 5 not found; 6 benchmark incomplete; 7 network error; 130 interrupted."
)


class LlmhostError(Exception):
    """Base of every error llmhost reports to a user.

    `message` says what went wrong; `hint` (optional) says what to do next, ideally naming a command.
    """

    exit_code: int = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} {self.hint}"
        return self.message


class UsageError(LlmhostError):
    """The user's input is wrong: an option, a model reference, a profile, a file."""

    exit_code = ExitCode.BAD_INPUT


class ModelError(UsageError):
    """A model reference cannot be resolved or its files cannot be read."""


class HardwareError(UsageError):
    """A hardware description (catalog name, --hardware spec) is wrong."""


class ProfileError(UsageError):
    """A profile file is invalid."""


class NothingFitsError(LlmhostError):
    exit_code = ExitCode.NOTHING_FITS


class EngineError(LlmhostError):
    """An engine is missing, failed to install, failed to start, or crashed for good."""

    exit_code = ExitCode.ENGINE_FAILED


class NotFoundError(LlmhostError):
    exit_code = ExitCode.NOT_FOUND


class BenchError(LlmhostError):
    exit_code = ExitCode.BENCH_INCOMPLETE


class NetworkError(LlmhostError):
    exit_code = ExitCode.NETWORK
