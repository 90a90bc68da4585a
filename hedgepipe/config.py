"""Configuration: CLI > ``HEDGEPIPE_*`` environment > ``etc/hedgepipe.toml`` > defaults.

The file has a ``[runtime]`` table (settings every daemon shares), an ``[endpoints]`` table
(where each daemon publishes) and one table per daemon, named as the daemon. Unknown tables
and unknown keys are errors, never ignored: a typo must not silently fall back to a default.

Environment variables are ``HEDGEPIPE_<TABLE>__<KEY>`` with the table name upper-cased and
``-`` written ``_`` (``HEDGEPIPE_RUNTIME__SNDHWM=5000``, ``HEDGEPIPE_BUS_RELAY__INPUTS='["a"]'``).
Their values, like ``--set KEY=VALUE`` values, are text read by the key's type: a string key
takes the text as it is, a number or boolean key converts it, and a list or table key parses
it as a TOML value (``["a", "b"]``).

Secrets (fields a daemon lists in ``secret_fields``) are taken only from the environment;
one written in the file or on the command line is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping

import msgspec

from .errors import ConfigError

DAEMON_ENTRY_POINTS = "hedgepipe.daemons"
ENV_PREFIX = "HEDGEPIPE_"
#: HEDGEPIPE_* variables that are not configuration keys.
ENV_NOT_CONFIG = {"HEDGEPIPE_CONFIG", "HEDGEPIPE_DATA", "HEDGEPIPE_REQUIRE_DATA"}
DEFAULT_CONFIG = Path("etc/hedgepipe.toml")


def default_run_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(base, "hedgepipe") if base else f"/tmp/hedgepipe-{os.getuid()}"


class RuntimeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: Directory for ipc sockets; relative paths are relative to the config file.
    run_dir: str = ""
    #: Frames queued per subscriber before the publisher refuses (and counts) more.
    sndhwm: int = 100_000
    rcvhwm: int = 100_000
    heartbeat_interval_s: float = 1.0
    #: A payload larger than this is dropped and counted as ``oversized``.
    max_frame_bytes: int = 1 << 20
    #: How long closing sockets may spend delivering what is queued.
    linger_ms: int = 1000
    #: On SIGTERM, how long to keep processing what had already arrived.
    drain_timeout_s: float = 2.0
    #: When a subscriber's queue is full: "drop" (that subscriber misses frames and counts
    #: the gap; others unaffected) or "refuse" (the frame is refused for every subscriber and
    #: counted in `drops`). See docs/decisions.md.
    when_subscriber_full: Literal["drop", "refuse"] = "drop"


class DaemonConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Keys every daemon table accepts; a daemon's own Config subclasses this."""

    #: Where to read from: names from [endpoints], endpoint URLs, or "-".
    inputs: list[str] = []
    #: Topic prefixes to subscribe to ("" = everything).
    topics: list[str] = msgspec.field(default_factory=lambda: [""])
    #: Serve Prometheus text on 127.0.0.1:PORT/metrics (0 = off).
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    #: Instance name stamped as ``src`` (default: the daemon name).
    instance: str = ""

    secret_fields: ClassVar[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Settings:
    """Everything one process needs, resolved."""

    runtime: RuntimeConfig
    endpoints: dict[str, str]
    daemon: Any  # the daemon's Config instance
    path: Path | None
    #: Every daemon table as written in the file (unvalidated): for tools looking across daemons.
    tables: dict[str, dict] = dataclasses.field(default_factory=dict)

    def endpoint_for(self, name_or_url: str) -> str:
        return resolve_endpoint(name_or_url, self.endpoints)

    def tap_endpoints(self) -> list[str]:
        """Every daemon's endpoint, less forwarders that have inputs (their frames are copies)."""
        copies = {name for name in republishing_daemons() if self.tables.get(name, {}).get("inputs")}
        return [self.endpoints[name] for name in sorted(self.endpoints) if name not in copies]


def known_daemons() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=DAEMON_ENTRY_POINTS))


def republishing_daemons() -> set[str]:
    """Daemons whose Service republishes its inputs (imports each daemon's module)."""
    found = set()
    for ep in entry_points(group=DAEMON_ENTRY_POINTS):
        try:
            service = ep.load()
        except ImportError as exc:  # that daemon is broken; tools tapping the bus are not
            logging.getLogger("hedgepipe.config").warning(
                "cannot load daemon %s: %s", ep.name, exc)
            continue
        if getattr(service, "republishes_inputs", False):
            found.add(ep.name)
    return found


def env_table_name(table: str) -> str:
    return table.upper().replace("-", "_")


def resolve_endpoint(name_or_url: str, endpoints: Mapping[str, str]) -> str:
    if name_or_url == "-" or "://" in name_or_url:
        return name_or_url
    if name_or_url in endpoints:
        return endpoints[name_or_url]
    raise ConfigError(f"input {name_or_url!r} is neither a name in [endpoints] "
                      f"({', '.join(sorted(endpoints)) or 'none'}) nor an endpoint URL")


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return path
    if environ.get("HEDGEPIPE_CONFIG"):
        return find_config_file(environ["HEDGEPIPE_CONFIG"], {})
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _read_toml(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _field_kinds(kind: type) -> dict[str, msgspec.inspect.Type]:
    return {f.name: f.type for f in msgspec.inspect.type_info(kind).fields}


def _is_container(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_is_container(x) for x in t.types)
    return isinstance(t, (msgspec.inspect.ListType, msgspec.inspect.DictType,
                          msgspec.inspect.TupleType, msgspec.inspect.VarTupleType,
                          msgspec.inspect.SetType))


def text_value(raw: str, t: msgspec.inspect.Type | None, where: str) -> Any:
    """Text from the environment or --set, read by the type of the key it sets."""
    if t is None or not _is_container(t):
        return raw  # strings stay strings; msgspec converts numbers/booleans (strict=False)
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {raw!r} is not a TOML list or table ({exc})") from None


def _env_tables(environ: Mapping[str, str], tables: list[str]) -> dict[str, dict[str, Any]]:
    by_env_name = {env_table_name(t): t for t in tables}
    found: dict[str, dict[str, Any]] = {}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_CONFIG:
            continue
        table_part, sep, key = var[len(ENV_PREFIX):].partition("__")
        if not sep or table_part not in by_env_name or not key:
            raise ConfigError(f"environment variable {var}: want {ENV_PREFIX}<TABLE>__<KEY> with "
                              f"TABLE one of {', '.join(sorted(by_env_name))}")
        found.setdefault(by_env_name[table_part], {})[key.lower()] = (raw, var)
    return found


def _merge(table: str, kind: type, layers: list[tuple[str, dict]]):
    """Merge (source, values) layers, lowest precedence first; convert; name the culprit."""
    kinds = _field_kinds(kind)
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            if isinstance(value, tuple):  # (text, where) from the environment or --set
                text, where = value
                value = text_value(text, kinds.get(key), where)
                source_of_key = where
            else:
                source_of_key = source
            data[key] = value
            origin[key] = source_of_key
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        key = str(exc).rpartition("`$.")[2].rstrip("`").split(".")[0].split("[")[0]
        where = origin.get(key, "defaults") if key in data else ", ".join(sorted(set(origin.values())))
        raise ConfigError(f"[{table}] {exc} (from {where or 'defaults'})") from None


def load_settings(daemon: str | None, config_type: type[DaemonConfig] = DaemonConfig, *,
                  config_path: str | None = None, cli: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None, known: list[str] | None = None,
                  set_keys: frozenset[str] | set[str] = frozenset()) -> Settings:
    """Resolve one daemon's settings. ``cli`` holds keys of the daemon's own table;
    those named in ``set_keys`` came from ``--set`` as text and are read by their type.

    With ``daemon=None`` (tools such as zmq-tap) only [runtime] and [endpoints] are resolved
    and ``Settings.daemon`` is None; the file is still checked for unknown tables.
    """
    environ = os.environ if environ is None else environ
    known = known_daemons() if known is None else known
    if daemon is not None and daemon not in known:
        known = [*known, daemon]
    path = find_config_file(config_path, environ)
    file_data = _read_toml(path)
    source = str(path) if path else "defaults"
    tables = ["runtime", "endpoints", *known]
    for table in file_data:
        if table not in tables:
            raise ConfigError(f"{source}: unknown table [{table}]; known tables: {', '.join(tables)}")
        if not isinstance(file_data[table], dict):
            raise ConfigError(f"{source}: {table} must be a table")
    env_data = _env_tables(environ, tables)

    own_file = dict(file_data.get(daemon, {})) if daemon else {}
    # --set values arrive as text; values of typed options (--in, --topic, ...) as they are.
    own_cli = {k: ((v, f"--set {k}") if isinstance(v, str) and k in set_keys else v)
               for k, v in (cli or {}).items()}
    for key in config_type.secret_fields:
        for where, data in (("the config file", own_file), ("the command line", own_cli)):
            if key in data:
                raise ConfigError(f"[{daemon}] {key} is a secret: set it only in the environment "
                                  f"({ENV_PREFIX}{env_table_name(daemon)}__{key.upper()}), not in {where}")

    runtime = _merge("runtime", RuntimeConfig, [(source, file_data.get("runtime", {})),
                                                ("environment", env_data.get("runtime", {}))])
    own = (_merge(daemon, config_type, [(source, own_file), ("environment", env_data.get(daemon, {})),
                                        ("command line", own_cli)])
           if daemon else None)

    base = path.parent.resolve() if path else Path.cwd()
    run_dir = Path(runtime.run_dir or default_run_dir())
    run_dir = run_dir if run_dir.is_absolute() else (base / run_dir).resolve()
    runtime = msgspec.structs.replace(runtime, run_dir=str(run_dir))

    endpoints = {name: f"ipc://{run_dir}/{name}.sock" for name in known}
    # Endpoint names are daemon names (with "-"), which the environment spells with "_".
    env_endpoints = {k.replace("_", "-"): text for k, (text, _var) in env_data.get("endpoints", {}).items()}
    raw_endpoints = {**file_data.get("endpoints", {}), **env_endpoints}
    for name, url in raw_endpoints.items():
        if not isinstance(url, str):
            raise ConfigError(f"[endpoints] {name} must be a string")
        endpoints[name] = url.replace("{run_dir}", str(run_dir))
    tables = {t: v for t, v in file_data.items() if t not in ("runtime", "endpoints")}
    return Settings(runtime=runtime, endpoints=endpoints, daemon=own, path=path, tables=tables)


def ensure_run_dir(runtime: RuntimeConfig) -> None:
    try:
        os.makedirs(runtime.run_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"[runtime] run_dir {runtime.run_dir}: {exc.strerror}") from None
