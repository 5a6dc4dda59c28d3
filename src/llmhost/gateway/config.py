"""The gateway's two files: the models file (YAML, which models it serves and how) and the keys file
(named API keys, 0600, re-read when it changes).

The models file is read like a profile (`yaml.safe_load` rules, bounded, no key given twice) and
validated by pydantic with `extra="forbid"`; every error names the key and its line:

    ~/.config/llmhost/gateway.yaml:7: models.chat.contxt: Extra inputs are not permitted

Each model takes every field a profile has (`llmhost.profiles.Profile`), plus the gateway's own
(ttl, pin, aliases, embeddings, devices, queue). Default location: `$XDG_CONFIG_HOME/llmhost/gateway.yaml`
(`~/.config/llmhost/gateway.yaml`).
"""

from __future__ import annotations

import hmac
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from llmhost.contract import Contract, Count, Port
from llmhost.errors import ProfileError, UsageError
from llmhost.inputs import decode_utf8, read_regular_file
from llmhost.net import is_loopback
from llmhost.profiles import Profile, compose_yaml, located_errors

DEFAULT_PORT = 7411
MAX_CONFIG_BYTES = 1 << 20
API_KEY_ENV = "LLMHOST_API_KEY"
KEYS_FILE_ENV = "LLMHOST_GATEWAY_KEYS"

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*")
# A configured name becomes part of a deployment name (`gw-NAME`): the same characters.
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,59}")
_DEVICE = re.compile(r"cpu|(cuda|rocm|metal):\d+")


def parse_duration(value: object) -> float:
    """Seconds from `90`, `90s`, `30m`, `1h30m`, `1.5h`; `0`/`never` means never."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 15m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text == "never":
            return 0.0
        match = _DURATION.fullmatch(text)
        if not text or match is None:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"cannot read the duration {value!r} (write 90s, 15m or 1h)") from None
        else:
            h, m, s = (float(g) if g else 0.0 for g in match.groups())
            seconds = h * 3600 + m * 60 + s
    else:
        raise ValueError("a duration is a number of seconds or text like 30s, 15m, 1h")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"a duration cannot be {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `12GiB`, `12g`, `512MB`, `1.5t` or a plain number of bytes (binary units)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or text like 12GiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.lower())
        if match is None:
            raise ValueError(f"cannot read the size {value!r} (write 512MiB or 12GiB)")
        scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2)]
        size = int(float(match.group(1)) * scale)
    else:
        raise ValueError("a size is a number of bytes or text like 12GiB")
    if size <= 0:
        raise ValueError(f"a size must be positive, not {value!r}")
    return size


class ModelEntry(Profile):
    """One model the gateway serves: every profile field, plus the gateway's."""

    profile: str | None = Field(
        default=None,
        description="A profile merged under this entry (a shipped name or a file); "
        "quality/throughput/latency set the planner's goal instead.",
    )
    aliases: list[str] = Field(default_factory=list, description="Other names clients may ask for.")
    ttl: float | None = Field(default=None, description="Unload after this long idle; 0 = never.")
    pin: bool = Field(default=False, description="Load at start and never unload or evict.")
    embeddings: bool = Field(default=False, description="Serve /v1/embeddings (the engine's --embeddings).")
    devices: list[str] | None = Field(default=None, description='Only these devices, e.g. ["cuda:1"].')
    queue: Count | None = Field(default=None, description="Requests that may wait for this model.")
    queue_timeout: float | None = Field(default=None, description="How long a request waits for it to load.")

    @field_validator("ttl", "queue_timeout", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str] | None) -> list[str] | None:
        for device in value or []:
            if not _DEVICE.fullmatch(device):
                raise ValueError(f"{device!r} is not a device (write cpu or cuda:0)")
        return value

    @field_validator("host")
    @classmethod
    def _upstream_on_loopback(cls, value: str | None) -> str | None:
        if value is not None and not is_loopback(value):
            raise ValueError("upstream engines listen on loopback only; set the gateway's host: instead")
        return value


class GatewayConfig(Contract):
    """The models file."""

    models: dict[str, ModelEntry] = Field(default_factory=dict)
    memory_budget: Literal["auto"] | dict[str, int] = Field(
        default="auto", description='"auto" (what the machine has) or bytes per device: {cpu: 12GiB}.'
    )
    default_ttl: float = Field(default=15 * 60.0, description="Idle time before a model unloads; 0 = never.")
    placement: Literal["pack", "spread"] = "pack"
    host: str = "127.0.0.1"
    port: Port = DEFAULT_PORT
    keys_file: str | None = Field(default=None, description="Named API keys (0600).")
    queue_size: Count = Field(default=64, description="Requests that may wait per model.")
    queue_timeout: float = Field(default=300.0, gt=0, description="How long a request waits for a load.")
    min_residence: float = Field(default=30.0, ge=0, description="A model is not evicted sooner.")
    drain_grace: float = Field(default=30.0, ge=0, description="Wait for in-flight requests on stop.")
    max_body_bytes: int = Field(default=16 << 20, gt=0)

    @field_validator("default_ttl", "queue_timeout", "min_residence", "drain_grace", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("max_body_bytes", mode="before")
    @classmethod
    def _body(cls, value: Any) -> Any:
        return parse_size(value)

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for device, size in value.items():
                if not isinstance(device, str) or not _DEVICE.fullmatch(device):
                    raise ValueError(f"{device!r} is not a device (write cpu or cuda:0)")
                out[device] = parse_size(size)
            return out
        return value

    @model_validator(mode="after")
    def _names(self) -> GatewayConfig:
        # Raised with the model's own location (not the model's top level), so that the error names the
        # entry's key and line: `gw.yaml:4: models.coder: give model: ...`.
        errors: list[InitErrorDetails] = []

        def error(loc: tuple[str | int, ...], message: str) -> None:
            errors.append(
                InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=loc[-1])
            )

        seen: dict[str, str] = {}
        for name, entry in self.models.items():
            if not _MODEL_NAME.fullmatch(name):
                error(("models", name), "a model name is 1-60 lowercase letters, digits, '.', '_' or '-'")
            if entry.model is None and entry.profile is None:
                error(("models", name), "give model: (or a profile: that has one)")
            for i, alias in enumerate([name, *entry.aliases]):
                if alias in seen:
                    loc: tuple[str | int, ...] = (
                        ("models", name) if i == 0 else ("models", name, "aliases", i - 1)
                    )
                    error(loc, f"the name {alias!r} is also used by {seen[alias]!r}")
                seen.setdefault(alias, name)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def ttl_of(self, name: str) -> float:
        ttl = self.models[name].ttl
        return self.default_ttl if ttl is None else ttl

    def queue_timeout_of(self, name: str) -> float:
        own = self.models[name].queue_timeout if name in self.models else None
        return own if own else self.queue_timeout

    def names(self) -> dict[str, str]:
        """Every name a client may ask for (model names and aliases) -> the model's name."""
        out = {}
        for name, entry in self.models.items():
            out[name] = name
            for alias in entry.aliases:
                out[alias] = name
        return out


def config_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "llmhost"


def default_config_path() -> Path:
    return config_dir() / "gateway.yaml"


def parse_config(text: str, source: str = "<gateway config>") -> GatewayConfig:
    root, data = compose_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(
            f"{source}:1: the models file is a mapping (models:, memory_budget:, ...).",
            hint="See docs/gateway.md for an example.",
        )
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(
            located_errors(exc, root, source),
            hint="Model keys: every profile key plus profile, aliases, ttl, pin, embeddings, devices, queue, "
            "queue_timeout (docs/gateway.md); fix the line named.",
        ) from exc


def load_config(path: str | Path | None = None) -> tuple[GatewayConfig, Path]:
    """The models file (default under the XDG config dir); a missing default file is an empty config."""
    file = Path(path).expanduser() if path is not None else default_config_path()
    if path is None and not file.exists():
        return GatewayConfig(), file
    data = read_regular_file(
        file,
        what="gateway models file",
        limit=MAX_CONFIG_BYTES,
        error=ProfileError,
        missing=(f"No models file {file}.", "Pass --config FILE (see docs/gateway.md for an example)."),
    )
    return parse_config(decode_utf8(data, source=str(file), error=ProfileError), str(file)), file


# -- keys ----------------------------------------------------------------------------------------------
class Keys:
    """Named API keys: the keys file (YAML `name: key`, mode 0600 enforced), re-read whenever it changes
    (inode, size, mtime or mode), plus `$LLMHOST_API_KEY` under the name "env". No key configured means no
    authentication (allowed on loopback only: `check_listen`)."""

    def __init__(self, path: Path | None, *, env_key: str | None = None) -> None:
        self.path = path
        self._env_key = env_key
        self._stamp: tuple[int, int, int, int] | None = None
        self._keys: dict[str, str] = {}
        self.reload()

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or bool(self._env_key)

    def names(self) -> list[str]:
        return sorted(self._keys)

    def reload(self) -> None:
        """Re-read the file if it changed; a file that became unreadable or too open keeps refusing."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise UsageError(
                f"No keys file {self.path}.", hint="Create it (mode 0600) with one `name: key` per line."
            ) from None
        # The mode too: `chmod 644` changes neither the content nor the mtime, and must be refused.
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
        if stamp == self._stamp:
            return
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"The keys file {self.path} is not a regular file.", hint="Point at a file.")
        if st.st_mode & 0o077:
            raise UsageError(
                f"The keys file {self.path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}).",
                hint=f"Run `chmod 600 {self.path}`.",
            )
        data = read_regular_file(self.path, what="keys file", limit=MAX_CONFIG_BYTES, error=UsageError)
        _, parsed = compose_yaml(decode_utf8(data, source=str(self.path)), str(self.path))
        keys = _check_keys(parsed or {}, self.path)
        self._keys, self._stamp = keys, stamp

    def match(self, presented: str | None) -> str | None:
        """The name of the key presented (`Authorization: Bearer KEY`), or None when it matches none."""
        if presented is None:
            return None
        found = None
        candidates = list(self._keys.items())
        if self._env_key:
            candidates.append(("env", self._env_key))
        for name, key in candidates:
            # Compare with every key (constant time per key): no early exit tells which matched.
            if hmac.compare_digest(key.encode(), presented.encode()):
                found = name
        return found


def _check_keys(parsed: object, path: Path) -> dict[str, str]:
    if not isinstance(parsed, dict):
        raise UsageError(f"The keys file {path} is not a mapping.", hint="Write one `name: key` per line.")
    keys: dict[str, str] = {}
    for name, key in parsed.items():
        if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
            raise UsageError(
                f"The keys file {path}: {str(name)[:40]!r} is not a key name.",
                hint="Names are lowercase letters, digits, '.', '_' or '-'.",
            )
        if not isinstance(key, str) or len(key) < 8:
            # The key itself is never echoed.
            raise UsageError(
                f"The keys file {path}: the key named {name!r} is not text of at least 8 characters.",
                hint="Use a long random key (`python -c 'import secrets; print(secrets.token_urlsafe())'`).",
            )
        keys[name] = key
    return keys


def load_keys(config: GatewayConfig, config_path: Path | None) -> Keys:
    """The keys: `$LLMHOST_GATEWAY_KEYS`, else the config's keys_file: (relative to the config file),
    else `gateway-keys.yaml` beside the default config if it exists; plus `$LLMHOST_API_KEY`."""
    env_key = os.environ.get(API_KEY_ENV) or None
    if env_key is not None and len(env_key) < 8:
        raise UsageError(f"${API_KEY_ENV} is too short.", hint="Use at least 8 characters.")
    raw = os.environ.get(KEYS_FILE_ENV) or config.keys_file
    path: Path | None = None
    if raw:
        path = Path(raw).expanduser()
        if not path.is_absolute() and config_path is not None:
            path = config_path.parent / path
    elif (config_dir() / "gateway-keys.yaml").exists():
        path = config_dir() / "gateway-keys.yaml"
    return Keys(path, env_key=env_key)


def check_listen(host: str, keys: Keys, *, insecure_no_auth: bool) -> None:
    """The `serve` rule: listening beyond loopback needs a key, unless explicitly waived."""
    if keys.enabled or is_loopback(host) or insecure_no_auth:
        return
    raise UsageError(
        f"The gateway would listen on {host} with no API key.",
        hint=f"Set {API_KEY_ENV} or a keys file (keys_file:, ${KEYS_FILE_ENV}), or pass --insecure-no-auth.",
    )
