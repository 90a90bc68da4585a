"""hedgepipe: run and inspect the pipeline under supervisord (``up``, ``down``, ``status``,
``check-config``).

A new subcommand goes in its own module as a click command decorated with ``@pass_control``
(it then gets the :class:`Control` with the resolved files) and ``@guarded`` (exit codes),
and is registered with ``cli.add_command`` at the bottom of this file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import click

import hedgepipe

from ..cli import common_options, guarded
from ..config import known_daemons, Settings, load_settings
from ..errors import EX_CONFIG, ConfigError, UpstreamError
from ..logs import setup_logging
from . import pipeline_status as ps
from .config_check import check_daemon_configs, check_programs
from .supervisord_client import (Supervisor, SupervisorConf, check_socket_path, live_pidfile_pid,
                                 make_dirs, pid_alive, read_supervisor_conf, start_supervisord,
                                 wait_until)

log = logging.getLogger("hedgepipe.ctl")

#: Exit code of `status` and `up` when a program is not RUNNING or has no heartbeat.
EX_NOT_HEALTHY = 3
#: How many bytes of a failed program's log `up` prints.
LOG_TAIL_BYTES = 3000


def default_supervisord_conf() -> Path:
    """The clone's supervisord.conf: beside the package (editable install), else in the cwd."""
    beside = Path(hedgepipe.__file__).resolve().parent.parent / "supervisord.conf"
    for candidate in (beside, Path("supervisord.conf")):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no supervisord.conf at {beside} or in the current directory: "
                      f"pass --supervisord-conf FILE")


class Control:
    """What every subcommand shares. Files are read on first use, so --help always works."""

    def __init__(self, config_option: str | None, supervisord_conf_option: str | None):
        self.config_option = config_option
        self.supervisord_conf_option = supervisord_conf_option
        self._conf: SupervisorConf | None = None

    @property
    def supervisor_conf(self) -> SupervisorConf:
        if self._conf is None:
            self._conf = read_supervisor_conf(self.supervisord_conf_option or default_supervisord_conf())
        return self._conf

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.supervisor_conf.socket_path)

    @property
    def has_supervisor_conf(self) -> bool:
        """False only when no file was named and none is found: config checks still work."""
        try:
            return bool(self.supervisord_conf_option or default_supervisord_conf())
        except ConfigError:
            return False

    @property
    def config_path(self) -> str | None:
        """--config, else the one file every program in supervisord.conf is started with."""
        if self.config_option or not self.has_supervisor_conf:
            return self.config_option
        used = self.supervisor_conf.program_config_paths()
        return next(iter(used)) if len(used) == 1 else None

    def settings(self) -> Settings:
        return load_settings(None, config_path=self.config_path)

    def config_mismatch(self) -> str | None:
        """Why --config is not the file the daemons read, or None when it is."""
        if not self.config_option:
            return None
        mine = os.path.realpath(self.config_option)
        others = sorted(p for p in self.supervisor_conf.program_config_paths() if os.path.realpath(p) != mine)
        if not others:
            return None
        return (f"{self.supervisor_conf.path} starts the daemons with --config {', '.join(others)}, "
                f"not {self.config_option}")


pass_control = click.make_pass_decorator(Control)


def note(text: str) -> None:
    """Progress for people, on stderr: stdout carries only the status table (or JSON)."""
    click.echo(text, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
             epilog="Exit codes: 0 ok; 3 a program is not RUNNING or has no heartbeat (up, status); "
                    "69 supervisord is not running or cannot start (status, down, up); 78 bad "
                    "configuration; 70 internal error. See docs/operations.md.")
@click.option("--supervisord-conf", metavar="FILE",
              help="supervisord config [default: the supervisord.conf of the clone hedgepipe is "
                   "installed from, else ./supervisord.conf].")
@common_options
@click.version_option(hedgepipe.__version__, prog_name="hedgepipe")
@click.pass_context
def cli(ctx, supervisord_conf, config_path, log_level, log_json):
    """Run the hedgepipe daemons under supervisord and inspect them.

    Without --config, the config file is the one supervisord.conf starts the daemons with.
    """
    setup_logging(log_level, log_json)
    ctx.obj = Control(config_path, supervisord_conf)


# The shared --config help names the daemons' default; here the default is another file.
for _param in cli.params:
    if _param.name == "config_path":
        _param.help = ("Config file [env HEDGEPIPE_CONFIG; default: the one supervisord.conf "
                       "starts the daemons with].")


@cli.command()
@click.option("--timeout", type=float, default=60.0, metavar="SECONDS",
              help="How long to wait for every program to be RUNNING and heard on the bus.")
@pass_control
@guarded
def up(control: Control, timeout: float):
    """Start the pipeline and wait until every daemon is RUNNING and heartbeating.

    Checks the configuration, creates the directories supervisord.conf names (var/log,
    var/run), starts supervisord unless it is running (then it applies supervisord.conf edits
    and starts stopped programs instead), waits, and prints `status`. On a program that
    fails to start it prints the end of its log and exits 3; a daemon RUNNING but not heard
    within the timeout also makes it exit 3.
    """
    deadline = time.monotonic() + timeout
    conf = control.supervisor_conf
    check_socket_path(conf)
    mismatch = control.config_mismatch()
    if mismatch:
        raise ConfigError(f"{mismatch}: `status` would watch other endpoints than the daemons use; "
                          f"use that --config or edit supervisord.conf")
    if report_config(control):
        return EX_CONFIG
    make_dirs(conf)
    sup = control.supervisor
    pid = sup.pid()
    if pid is None:
        note(f"starting supervisord -c {conf.path}")
        start_supervisord(conf)
        pid = wait_until(sup.pid, timeout_s=10)
        if pid is None:
            raise UpstreamError(f"supervisord started but does not answer on {conf.socket_path}; "
                                f"see its log (supervisord.conf [supervisord] logfile)")
    else:
        note(f"supervisord already running (pid {pid})")
        for change in sup.update():
            note(change)
        for proc in sup.processes():
            if proc["statename"] in ("STOPPED", "EXITED", "FATAL"):
                note(f"starting {proc['name']} (was {proc['statename']})")
                sup.start(f"{proc['group']}:{proc['name']}")
    failed = sup.wait_running(timeout)
    if failed:
        for proc in failed:
            report_failed(sup, proc)
        return EX_NOT_HEALTHY
    # RUNNING is supervisord's word (alive for startsecs); a daemon still starting (imports,
    # priming from Redis) heartbeats a little later, on a loaded machine later still.
    while time.monotonic() < deadline and not ps.all_healthy(status_rows(control)[0]):
        pass  # each look listens up to two heartbeat intervals
    return print_status(control, as_json=False)


def report_failed(sup: Supervisor, proc: dict) -> None:
    why = f": {proc['spawnerr']}" if proc.get("spawnerr") else ""
    note(f"{proc['name']} is {proc['statename']}{why}; the end of {proc['stdout_logfile'] or 'its log'}:")
    for line in sup.tail(f"{proc['group']}:{proc['name']}", LOG_TAIL_BYTES).splitlines()[-20:]:
        note(f"  {line}")


@cli.command()
@click.option("--timeout", type=float, default=60.0, metavar="SECONDS",
              help="How long to wait for supervisord to exit after stopping its programs.")
@pass_control
@guarded
def down(control: Control, timeout: float):
    """Stop every daemon and supervisord (each daemon drains first: SIGTERM).

    Waits until supervisord's process has exited. Not running is not an error (exit 0).
    """
    conf = control.supervisor_conf
    sup = control.supervisor
    pid = sup.pid()
    if pid is None:
        pid = live_pidfile_pid(conf)
        if pid is None:
            note("supervisord is not running")
            return 0
        note(f"supervisord (pid {pid}, from {conf.pidfile}) does not answer on {conf.socket_path}; "
             f"waiting for it to exit")
    else:
        note(f"stopping the daemons and supervisord (pid {pid})")
        sup.shutdown()
    if wait_until(lambda: not pid_alive(pid), timeout, interval_s=0.1) is None:
        raise UpstreamError(f"supervisord (pid {pid}) is still running after {timeout:g} s; "
                            f"see its log, or kill {pid}")
    note("stopped")
    return 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@pass_control
@guarded
def status(control: Control, as_json: bool):
    """Each daemon's supervisord state and its last heartbeat on the bus.

    Listens to hb.* on every endpoint for about two heartbeat intervals (less once every
    running daemon was heard). Columns: IN/OUT frames, DROPS (refused at the high-water
    mark), GAPS (missing sequence numbers), ERRORS (frames dropped as undecodable, bad
    envelope, unknown topic, bad framing, oversized, truncated, plus handler exceptions),
    LAG-p99 (input latency over the last interval). Daemons heard on the bus that supervisord
    does not run are listed with STATE "-". Exit 0 if every program is RUNNING with a
    heartbeat, else 3; 69 if supervisord is not running.
    """
    return print_status(control, as_json)


def status_rows(control: Control) -> tuple[list, int]:
    """Every program's supervisord state and last heartbeat, and the unreadable hb frames."""
    sup = control.supervisor
    procs = sup.processes()
    settings = control.settings()
    bus_daemons = set(known_daemons())
    running = {p["name"] for p in procs if p["statename"] == "RUNNING"} & bus_daemons
    # Two intervals, plus time for the subscriptions to reach the publishers.
    window_s = 2 * settings.runtime.heartbeat_interval_s + 0.5
    heartbeats, bad = ps.collect_heartbeats(list(settings.endpoints.values()), window_s, running)
    return ps.build_rows(procs, heartbeats, time.time_ns(), bus_daemons), bad


def print_status(control: Control, as_json: bool) -> int:
    sup = control.supervisor
    mismatch = control.config_mismatch()
    if mismatch:
        log.warning("%s: heartbeats may be missed", mismatch)
    rows, bad = status_rows(control)
    if as_json:
        click.echo(json.dumps({**ps.rows_as_json(rows), "supervisord_pid": sup.pid(),
                               "unreadable_heartbeats": bad}))
    else:
        click.echo(ps.render_table(rows))
        if bad:
            note(f"{bad} unreadable frames on hb.* were ignored (see zmq-tap --topic hb.)")
    return 0 if ps.all_healthy(rows) else EX_NOT_HEALTHY


@cli.command("check-config")
@pass_control
@guarded
def check_config(control: Control):
    """Load and validate the configuration of every known daemon (exit 78 on an error)."""
    return EX_CONFIG if report_config(control, verbose=True) else 0


def report_config(control: Control, verbose: bool = False) -> int:
    """Print each daemon's config check (errors always, OK lines if verbose); the error count."""
    results = check_daemon_configs(control.config_path)
    for name, error in results:
        if error:
            click.echo(f"ERROR  {name}: {error}", err=not verbose)
        elif verbose:
            click.echo(f"OK     {name}")
    if verbose and control.has_supervisor_conf:
        for text in check_programs(control.supervisor_conf.programs):
            click.echo(f"NOTE   {text}")
    return sum(1 for _, error in results if error)


main = cli

# Subcommands kept in their own modules (imported last: they import nothing from here).
from .replay import replay  # noqa: E402
from .stats import stats  # noqa: E402

cli.add_command(replay)
cli.add_command(stats)
