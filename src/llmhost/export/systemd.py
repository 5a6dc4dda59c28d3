"""A systemd unit running `llmhost serve --name N ...` on the node itself (user or system scope).

llmhost keeps supervising the engine (readiness, restarts, logs, `ps`/`stop`); systemd starts it at
boot and restarts llmhost itself if it exits with an error. The API key comes from an EnvironmentFile
(0600) as LLMHOST_API_KEY, the variable `serve` reads: never on the command line (visible in `ps`).
"""

from __future__ import annotations

import re
from typing import Literal

from llmhost.errors import UsageError
from llmhost.export.common import check_node, header
from llmhost.export.models import ExportFile, ExportSource

Scope = Literal["user", "system"]

# systemd expands `%` specifiers and `$VAR` in ExecStart; a word with a space, quote or backslash
# needs quoting (systemd.syntax(7)). Anything else is written as is.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
# What useradd accepts (and systemd's User= then resolves); anything else would be a unit-file injection.
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")


def quote(arg: str) -> str:
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_name(source: ExportSource) -> str:
    # One prefix, so `systemctl list-units "llmhost-*"` lists them all (not doubled on an llmhost-... name).
    return f"{source.name if source.name.startswith('llmhost-') else 'llmhost-' + source.name}.service"


def env_file_path(source: ExportSource, scope: Scope, home: str) -> str:
    base = f"{home}/.config/llmhost" if scope == "user" else "/etc/llmhost"
    return f"{base}/{source.name}.env"


def unit_path(source: ExportSource, scope: Scope, home: str) -> str:
    base = f"{home}/.config/systemd/user" if scope == "user" else "/etc/systemd/system"
    return f"{base}/{unit_name(source)}"


def render_systemd(
    source: ExportSource,
    *,
    scope: Scope,
    home: str,
    writable: list[str],
    user: str | None = None,
) -> list[ExportFile]:
    """The unit text. `writable`: llmhost's state and cache dirs and the HF cache (the only paths the
    service may write under ProtectSystem=strict). `user`: the account a system unit runs as."""
    check_node(source, "systemd", containers=False)
    if scope == "system" and user is not None and not _USER.fullmatch(user):
        raise UsageError(
            f"--user {user!r} is not an account name.", hint="Give a login name, e.g. --user llmhost."
        )
    env_file = env_file_path(source, scope, home)
    exec_start = " ".join(quote(a) for a in [*source.llmhost_argv, "serve", *source.serve_args])
    # A loopback deployment may run without a key: then a missing env file is fine ("-" prefix).
    env_line = f"EnvironmentFile={'' if source.auth else '-'}{env_file}"
    lines = [
        header(source, "systemd").rstrip("\n"),
        "[Unit]",
        f"Description=llmhost: {source.served_model_name} ({source.name}) on {source.host}:{source.port}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_start}",
        env_line,
        # llmhost restarts a crashed engine itself; systemd restarts llmhost when it gives up (exit 4).
        "Restart=on-failure",
        "RestartSec=10",
        # `serve` stops the engine's whole process group on SIGTERM; give vLLM time to release the GPUs.
        "KillMode=mixed",
        "TimeoutStopSec=60",
        # Model loading is bounded by llmhost's own ready deadline, not systemd's start timeout.
        "TimeoutStartSec=infinity",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        *(f"ReadWritePaths=-{path}" for path in writable),
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]
    if scope == "system" and user:
        lines.insert(lines.index("Type=exec") + 1, f"User={user}")
    lines += ["", "[Install]", f"WantedBy={'default.target' if scope == 'user' else 'multi-user.target'}", ""]
    return [ExportFile(filename=unit_name(source), text="\n".join(lines))]


def env_file_template(source: ExportSource, *, compose: bool = False) -> ExportFile:
    """The env file's shape with empty values: the user fills it in and renames it, mode 0600.
    systemd: llmhost reads LLMHOST_API_KEY; compose: the engine reads its own variable."""
    keys = sorted(source.launch.secret_env) if compose else [source.api_key_env]
    lines = ["# The API key clients must send; keep this file mode 0600 and never commit it."]
    lines += [f"{key}=" for key in keys] if source.auth else ["# (no key: the service listens on loopback)"]
    lines += ["# A token for gated Hub models (optional).", "HF_TOKEN=", ""]
    text = "\n".join(lines)
    return ExportFile(filename=f"{source.name}.env.example", text=text, mode=0o600)


def systemctl_lines(source: ExportSource, scope: Scope, home: str) -> list[str]:
    """What to run after the unit is in place."""
    ctl = "systemctl --user" if scope == "user" else "sudo systemctl"
    env_file = env_file_path(source, scope, home)
    lines = []
    if source.auth:
        lines.append(f"install -D -m 600 /dev/null {env_file}  # then add {source.api_key_env}=<key> to it")
    lines += [f"{ctl} daemon-reload", f"{ctl} enable --now {unit_name(source)}"]
    if scope == "user":
        lines.append("loginctl enable-linger  # keep it running after you log out")
    lines.append(f"journalctl {'--user ' if scope == 'user' else ''}-u {unit_name(source)} -f")
    return lines
