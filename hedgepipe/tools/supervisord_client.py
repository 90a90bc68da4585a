"""supervisord from the outside: its config file, starting it, and its XML-RPC interface.

``hedgepipe up/down/status`` talk to supervisord over the unix socket named in
``[unix_http_server] file`` of supervisord.conf, with supervisor's own XML-RPC transport.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from supervisor.xmlrpc import SupervisorTransport

from ..procs import pid_alive  # noqa: F401  (re-exported: ctl and tests import it from here)
from ..errors import ConfigError, UpstreamError

#: Linux limit on a unix socket path (sun_path is 108 bytes with the NUL).
MAX_UNIX_SOCKET_PATH = 107
#: Keys whose value is a file supervisord writes: their directories must exist first.
_FILE_KEYS = ("logfile", "pidfile", "file", "stdout_logfile", "stderr_logfile")
_NOT_A_PATH = {"", "auto", "none", "syslog"}


@dataclass(frozen=True)
class SupervisorConf:
    """What hedgepipe needs from a supervisord.conf, with %(here)s expanded."""

    path: Path
    socket_path: str
    pidfile: str
    #: [program:NAME] -> its command line
    programs: dict[str, str]
    #: directories supervisord writes into and does not create
    dirs: tuple[str, ...]

    def program_config_paths(self) -> set[str]:
        """The --config FILE each program is started with (absolute, normalised)."""
        found = set()
        for command in self.programs.values():
            args = shlex.split(command)
            for i, arg in enumerate(args):
                if arg == "--config" and i + 1 < len(args):
                    found.add(os.path.normpath(args[i + 1]))
                elif arg.startswith("--config="):
                    found.add(os.path.normpath(arg.partition("=")[2]))
        return found


def read_supervisor_conf(path: str | Path) -> SupervisorConf:
    path = Path(path).absolute()
    if not path.is_file():
        raise ConfigError(f"supervisord config {path} does not exist")
    here = str(path.parent)
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), strict=False)
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {exc}") from None

    def get(section: str, key: str, program: str = "") -> str:
        raw = parser.get(section, key, fallback="")
        return raw.replace("%(here)s", here).replace("%(program_name)s", program).strip()

    socket_path = get("unix_http_server", "file")
    if not socket_path:
        raise ConfigError(f"{path}: hedgepipe needs a [unix_http_server] file= (its control socket)")
    programs, dirs = {}, set()
    for section in parser.sections():
        program = section.partition(":")[2] if section.startswith("program:") else ""
        if program:
            programs[program] = get(section, "command", program)
        for key in _FILE_KEYS:
            value = get(section, key, program)
            if value.lower() not in _NOT_A_PATH:
                dirs.add(os.path.dirname(value))
    childlogdir = get("supervisord", "childlogdir")
    if childlogdir:
        dirs.add(childlogdir)
    return SupervisorConf(path=path, socket_path=socket_path,
                          pidfile=get("supervisord", "pidfile") or os.path.join(here, "supervisord.pid"),
                          programs=programs, dirs=tuple(sorted(d for d in dirs if d)))


def check_socket_path(conf: SupervisorConf) -> None:
    size = len(conf.socket_path.encode())
    if size > MAX_UNIX_SOCKET_PATH:
        raise ConfigError(f"supervisord's socket {conf.socket_path} is {size} bytes long; a unix socket "
                          f"path is limited to {MAX_UNIX_SOCKET_PATH}: move the clone to a shorter path "
                          f"or set [unix_http_server] file (and [supervisorctl] serverurl) in {conf.path}")


def make_dirs(conf: SupervisorConf) -> None:
    for directory in conf.dirs:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {directory} (named in {conf.path}): {exc.strerror}") from None


def start_supervisord(conf: SupervisorConf) -> None:
    """Start supervisord; it daemonizes once its socket is bound, so this returns quickly."""
    # A file, not a pipe, for its stderr: the daemonized child must not hold our pipe open.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf.path)],
                              stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=60)
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise UpstreamError(f"supervisord -c {conf.path} failed (exit {proc.returncode}): {message}")


def wait_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.1):
    """Poll ``predicate`` until it returns something true (returned) or the deadline (None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return result or None
        time.sleep(interval_s)


def live_pidfile_pid(conf: SupervisorConf) -> int | None:
    """The pid in supervisord's pidfile if that process is alive and is a supervisord."""
    try:
        pid = int(Path(conf.pidfile).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"supervisord" in cmdline and pid_alive(pid) else None


class Supervisor:
    """A client of one supervisord, over its unix socket. Each call opens a fresh connection."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def _rpc(self):
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def _call(self, method: str, *args):
        try:
            return getattr(self._rpc(), method)(*args)
        except xmlrpc.client.Fault as exc:
            raise UpstreamError(f"supervisord {method}: {exc.faultString}") from None
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise UpstreamError(f"supervisord is not running (no answer on {self.socket_path}: "
                                f"{exc}); start the pipeline with `hedgepipe up`") from None

    def pid(self) -> int | None:
        """supervisord's pid, or None when nothing answers on the socket."""
        try:
            return self._rpc().getPID()
        except (OSError, xmlrpc.client.ProtocolError):
            return None
        except xmlrpc.client.Fault:  # answering, but shutting down
            return None

    def processes(self) -> list[dict]:
        return self._call("getAllProcessInfo")

    def start(self, name: str) -> None:
        self._call("startProcess", name, False)

    def tail(self, name: str, nbytes: int = 4000) -> str:
        text, _offset, _overflow = self._call("tailProcessStdoutLog", name, 0, nbytes)
        return text

    def wait_running(self, timeout_s: float) -> list[dict]:
        """[] once every program is RUNNING, else those that are not: as soon as one is FATAL
        (its start retries are used up), or at the deadline."""

        def settled():
            pending = [p for p in self.processes() if p["statename"] != "RUNNING"]
            if not pending or any(p["statename"] == "FATAL" for p in pending):
                return ("settled", pending)
            return None

        result = wait_until(settled, timeout_s, interval_s=0.2)
        return result[1] if result else [p for p in self.processes() if p["statename"] != "RUNNING"]

    def update(self) -> list[str]:
        """Apply supervisord.conf edits (like `supervisorctl update`); what changed, as text."""
        added, changed, removed = self._call("reloadConfig")[0]
        for group in changed + removed:
            self._call("stopProcessGroup", group, True)
            self._call("removeProcessGroup", group)
        for group in changed + added:
            self._call("addProcessGroup", group)
        return ([f"added {g}" for g in added] + [f"restarted {g} (changed)" for g in changed]
                + [f"removed {g}" for g in removed])

    def shutdown(self) -> None:
        self._call("shutdown")
