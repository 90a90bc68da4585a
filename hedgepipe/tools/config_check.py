"""`hedgepipe check-config`: resolve every daemon's settings the way the daemon would at start.

Each daemon registers its Service in the ``hedgepipe.daemons`` entry point group; the Service
names its Config type, so a typo in any table, a wrong type or an input that names no
endpoint is found before supervisord starts anything.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..bus import check_endpoint
from ..config import DAEMON_ENTRY_POINTS, Settings, known_daemons, load_settings
from ..errors import ConfigError, HedgepipeError

#: The name under which the shared tables are reported.
SHARED_TABLES = "[runtime] [endpoints]"


def check_endpoints(daemon: str, settings: Settings) -> None:
    """The endpoint checks a daemon makes on start (see cli.daemon_command)."""
    cfg = settings.daemon
    name = cfg.instance or daemon
    out = settings.endpoints.get(name) or settings.endpoints[daemon]
    check_endpoint(out, binding=False)
    inputs = [settings.endpoint_for(i) for i in cfg.inputs]
    for endpoint in inputs:
        check_endpoint(endpoint, binding=False)
    if out in inputs and out != "-":
        raise ConfigError(f"{name} would read its own output {out}")


def check_daemon_configs(config_path: str | None) -> list[tuple[str, str | None]]:
    """(name, error or None) for the shared tables, then for each registered daemon."""
    results: list[tuple[str, str | None]] = []
    try:
        load_settings(None, config_path=config_path)
        results.append((SHARED_TABLES, None))
    except HedgepipeError as exc:
        # The file itself is unreadable or has an unknown table: every daemon would fail the same way.
        return [(SHARED_TABLES, str(exc))]
    for ep in sorted(entry_points(group=DAEMON_ENTRY_POINTS), key=lambda e: e.name):
        try:
            service = ep.load()
        except Exception as exc:  # importing a daemon module can raise anything: report, go on
            results.append((ep.name, f"cannot load {ep.value}: {type(exc).__name__}: {exc}"))
            continue
        try:
            settings = load_settings(ep.name, service.Config, config_path=config_path)
            check_endpoints(ep.name, settings)
            results.append((ep.name, None))
        except HedgepipeError as exc:
            results.append((ep.name, str(exc)))
    return results


def check_programs(programs: dict[str, str]) -> list[str]:
    """Notes on supervisord.conf against the registered daemons (not errors: a daemon may be
    run by hand, and a program may be a helper that is not a daemon)."""
    daemons = set(known_daemons())
    notes = [f"daemon {d} has no [program:{d}] in supervisord.conf: `hedgepipe up` does not run it"
             for d in sorted(daemons - programs.keys())]
    notes += [f"[program:{p}] is not a registered daemon: `hedgepipe status` shows no heartbeat for it"
              for p in sorted(programs.keys() - daemons)]
    return notes
