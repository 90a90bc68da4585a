"""The command line every daemon shares, and the one place errors become exit codes."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

import click

from .config import load_settings
from .errors import ConfigError, HedgepipeError, exit_code_for
from .logs import setup_logging
from .runtime import Runtime, Service

log = logging.getLogger("hedgepipe")


def guarded(fn: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command body; map what escapes it to a logged error and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            code = fn(*args, **kwargs) or 0
        except HedgepipeError as exc:
            log.error(str(exc), extra={"error": type(exc).__name__})
            code = exc.exit_code
        except KeyboardInterrupt:
            code = 130
        except Exception as exc:  # the last line of defence: say what broke
            log.critical("unexpected error: %s", exc, exc_info=True)
            code = exit_code_for(exc)
        sys.exit(code)

    return wrapper


def parse_set(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: want KEY=VALUE", param_hint="--set")
        out[key.strip()] = value
    return out


def common_options(fn):
    """--config, --log-level, --log-json: shared by daemons and tools."""
    fn = click.option("--log-json", is_flag=True, help="Log JSON lines on stderr instead of text.")(fn)
    fn = click.option("--log-level", default="INFO", show_default=True,
                      type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
                      help="Least severe log level to print.")(fn)
    fn = click.option("--config", "config_path", metavar="FILE", envvar="HEDGEPIPE_CONFIG",
                      help="Config file [env HEDGEPIPE_CONFIG; default etc/hedgepipe.toml if present].")(fn)
    return fn


def daemon_command(service_cls: type[Service]) -> click.Command:
    """Build the click command of one daemon around its Service."""

    @click.command(name=service_cls.name, help=service_cls.summary,
                   context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
    @click.option("--in", "inputs", multiple=True, metavar="ENDPOINT",
                  help="Read from ENDPOINT (repeatable): a name in [endpoints], ipc://, tcp://, or - "
                       "for stdin. Default: the daemon's `inputs` from the config.")
    @click.option("--out", "output", metavar="ENDPOINT",
                  help="Publish on ENDPOINT (bound), or - for stdout. Default: its [endpoints] entry.")
    @click.option("--topic", "topics", multiple=True, metavar="PREFIX",
                  help="Subscribe to topics starting with PREFIX (repeatable). Default: config `topics`.")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="Override a key of this daemon's config table (repeatable).")
    @click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                  help="Serve Prometheus text on 127.0.0.1:PORT/metrics.")
    @click.option("--instance", default=None, help="Name stamped as `src` and used for hb.<name>.")
    @common_options
    @guarded
    def command(inputs, output, topics, sets, metrics_port, instance, config_path, log_level, log_json,
                **own_options):
        setup_logging(log_level, log_json)
        typed = {}  # options click already converted
        if inputs:
            typed["inputs"] = list(inputs)
        if topics:
            typed["topics"] = list(topics)
        if metrics_port is not None:
            typed["metrics_port"] = metrics_port
        if instance:
            typed["instance"] = instance
        # The daemon's own options are named after its config keys; unset ones are None.
        typed.update({k: v for k, v in own_options.items() if v is not None})
        texts = {k: v for k, v in parse_set(sets).items() if k not in typed}  # read by key type
        settings = load_settings(service_cls.name, service_cls.Config, config_path=config_path,
                                 cli={**texts, **typed}, set_keys=set(texts))
        cfg = settings.daemon
        name = cfg.instance or service_cls.name
        out = output or settings.endpoints.get(name) or settings.endpoints[service_cls.name]
        ins = [settings.endpoint_for(i) for i in cfg.inputs]
        if out in ins and out != "-":
            raise ConfigError(f"{name} would read its own output {out}")
        service = service_cls(cfg)
        runtime = Runtime(service, settings.runtime, inputs=ins, output=out, topics=list(cfg.topics),
                          instance=name, metrics_port=cfg.metrics_port)
        log.info("starting", extra={"daemon": name, "out": out, "inputs": ",".join(ins) or "none",
                                    "config": str(settings.path or "defaults")})
        code = runtime.run()
        log.info("stopped", extra={"daemon": name, **runtime.counters.as_dict()})
        return code

    # Daemon-specific options (Service.cli_options) go before the shared ones in --help.
    command.params[:0] = [*service_cls.cli_options]
    return command

