"""``deribit-sim``: the command. Prints ``listening ws://HOST:PORT/ws/api/v2`` when ready."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from ..cli import guarded
from ..errors import ConfigError
from ..logs import setup_logging
from .auth import Auth
from .faults import Faults, parse_request_list
from .market import Market
from .server import PATH, SimServer

log = logging.getLogger("hedgepipe.sim")


def build_market(replay, instruments, chain, seed, mispricing, currencies, tick_s, max_strikes) -> Market:
    if replay and chain:
        raise ConfigError("--replay and --chain are two different markets: give one")
    if replay:
        from .replay import ReplayMarket
        if instruments is None and (Path(replay).parent / "DERIBIT.0").is_file():
            instruments = str(Path(replay).parent / "DERIBIT.0")
            log.info("instruments from the recording's folder", extra={"instruments": instruments})
        return ReplayMarket(replay, instruments)
    if chain:
        from .chain import ChainMarket
        return ChainMarket(chain, seed=seed, tick_s=tick_s, mispricing=mispricing)
    from .synthetic import SyntheticMarket
    try:
        return SyntheticMarket(seed=seed, currencies=currencies, tick_s=tick_s, max_strikes=max_strikes,
                               mispricing=mispricing)
    except ValueError as exc:
        raise ConfigError(f"--currencies: {exc}") from exc


async def serve_until_signal(server: SimServer, host: str, port: int, fix_port: int | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await server.start(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    fix = None
    if fix_port is not None:  # the same market over FIX 4.4 (fix_server.py)
        from .fix_server import FixServer
        fix = FixServer(server)
        try:
            fix_port = await fix.start(host, fix_port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{fix_port}: {exc.strerror or exc}") from exc
    click.echo(f"listening ws://{host}:{port}{PATH}")
    if fix is not None:
        click.echo(f"fix listening tcp://{host}:{fix_port}")
    sys.stdout.flush()
    await stop.wait()
    log.info("stopping", extra={"clients": len(server.sessions)})
    if fix is not None:
        await fix.close()
    await server.close()


@click.command(name="deribit-sim", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=8765, type=click.IntRange(0, 65535), help="Port (0 = any free port).")
@click.option("--fix-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve FIX 4.4 market data on this port (0 = any free port).")
@click.option("--replay", metavar="FILE", help="Serve a recording (DERIBIT.ws.1.0 format).")
@click.option("--instruments", metavar="FILE", help="get_instruments bodies for --replay (DERIBIT.0 format; "
              "default: DERIBIT.0 beside the recording).")
@click.option("--speed", default=1.0, type=click.FloatRange(min=0), help="Replay speed factor (0 = no waiting).")
@click.option("--as-fast-as-possible", is_flag=True, help="Same as --speed 0.")
@click.option("--chain", metavar="CSV", envvar="DERIBIT_SIM_CHAIN",
              help="Animate a real option chain (one get_order_book row per option) "
                   "[env DERIBIT_SIM_CHAIN: how `make run CHAIN=FILE` passes it].")
@click.option("--seed", type=int, default=None, help="Seed of the generated market (deterministic prices).")
@click.option("--mispricing", default=0.0, type=click.FloatRange(min=0),
              help="Now and then quote an option leg this many BTC off fair (box/parity opportunities).")
@click.option("--currencies", default="BTC,ETH", help="Currencies of the synthetic market.")
@click.option("--tick-ms", default=100.0, type=click.FloatRange(min=1), help="Market step of generated markets.")
@click.option("--max-strikes", default=24, type=click.IntRange(min=2), help="Strikes per expiry (synthetic).")
@click.option("--min-heartbeat", default=10.0, type=click.FloatRange(min=0.01),
              help="Smallest public/set_heartbeat interval accepted (Deribit: 10 s; lower it for tests).")
@click.option("--token-expires-in", default=900.0, type=click.FloatRange(min=0.1), help="Access token life (s).")
@click.option("--drop-after-messages", type=click.IntRange(min=0), help="Fault: cut a connection after N messages.")
@click.option("--drop-after-s", type=click.FloatRange(min=0), help="Fault: cut a connection after S seconds.")
@click.option("--drop-connections", default=1, type=click.IntRange(min=0),
              help="How many connections the drop faults hit (0 = all).")
@click.option("--skip-change", metavar="INSTRUMENT", help="Fault: withhold one book change of INSTRUMENT (* = any).")
@click.option("--skip-change-after", default=3, type=click.IntRange(min=1), help="... its Nth change.")
@click.option("--delay-ms", default=0.0, type=click.FloatRange(min=0), help="Fault: delay every message.")
@click.option("--too-many-requests", metavar="N,M", help="Fault: answer these request numbers (per connection) "
              "with 10028 too_many_requests.")
@click.option("--no-heartbeats", is_flag=True, help="Fault: never send heartbeat test_requests.")
@click.option("--stall-after-s", type=click.FloatRange(min=0), help="Fault: connections go silent after S seconds.")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
              case_sensitive=False))
@click.option("--log-json", is_flag=True, help="Log JSON lines on stderr.")
@guarded
def main(host, port, fix_port, replay, instruments, speed, as_fast_as_possible, chain, seed, mispricing, currencies,
         tick_ms, max_strikes, min_heartbeat, token_expires_in, drop_after_messages, drop_after_s,
         drop_connections, skip_change, skip_change_after, delay_ms, too_many_requests, no_heartbeats,
         stall_after_s, log_level, log_json):
    """A local Deribit: JSON-RPC 2.0 over WebSocket at ws://HOST:PORT/ws/api/v2, serving a synthetic
    market (default), a real chain (--chain) or a recording (--replay), with injectable faults."""
    setup_logging(log_level, log_json)
    try:
        rejected = parse_request_list(too_many_requests)
    except ValueError as exc:
        raise ConfigError(f"--too-many-requests {too_many_requests!r}: want numbers like 3,7") from exc
    tick_s = tick_ms / 1000.0
    market = build_market(replay, instruments, chain, seed, mispricing,
                          tuple(c.strip().upper() for c in currencies.split(",") if c.strip()), tick_s, max_strikes)
    faults = Faults(drop_after_messages=drop_after_messages, drop_after_s=drop_after_s,
                    drop_connections=drop_connections, skip_change=skip_change,
                    skip_change_after=skip_change_after, delay_ms=delay_ms, too_many_requests=rejected,
                    no_heartbeats=no_heartbeats, stall_after_s=stall_after_s)
    server = SimServer(market, faults=faults, auth=Auth(expires_in=token_expires_in),
                       min_heartbeat_s=min_heartbeat, tick_s=tick_s, speed=0.0 if as_fast_as_possible else speed)
    asyncio.run(serve_until_signal(server, host, port, fix_port))
    return 0
