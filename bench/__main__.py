"""``python -m bench`` (``make bench``): run the scenarios, print the table and the targets.

Each scenario is one fresh chain (generator, 1 or 3 hops, sink), run once with runtime
hops and once with raw hops, back to back so both see the same machine load. The exit
status is 0 when every run finished (targets are reported, not asserted), 1 when a run
failed, 130 on Ctrl-C; every process is stopped and the temp dir removed in all cases.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import zmq

from hedgepipe.config import RuntimeConfig

from . import report
from .book import encoded_size
from .chain import Chain, Outcome, RunError, Scenario

SATURATION_COUNT = 60_000
QUICK = {"transports": "ipc,pipe", "hops": "1,3", "loads": "10000,sat"}


def count_for(rate: float, scale: float, quick: bool) -> int:
    """Messages per run: ~4 s at low rates, ~3 s at 10k/s, 60k frames at saturation."""
    if quick:
        n = 2_000 if rate else 6_000
    elif not rate:
        n = SATURATION_COUNT
    else:
        n = rate * (4.0 if rate <= 1000 else 3.0)
    return max(100, int(n * scale))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench",
                                 description="Throughput and latency of runtime hops next to raw "
                                             "pyzmq/msgspec hops, over ipc and pipes.",
                                 epilog="docs/bench.md explains each scenario and column.")
    ap.add_argument("--quick", action="store_true",
                    help=f"a fast smoke run (transports {QUICK['transports']}, hops {QUICK['hops']}, "
                         f"loads {QUICK['loads']}, few messages)")
    ap.add_argument("--paths", default="raw,runtime", help="raw and/or runtime hops")
    ap.add_argument("--transports", default=None, help="ipc and/or pipe [ipc,pipe]")
    ap.add_argument("--hops", default=None, help="chain lengths [1,3]")
    ap.add_argument("--loads", default=None,
                    help="offered loads in msg/s, 'sat' = as fast as the chain takes [1000,10000,sat]")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every run's message count")
    ap.add_argument("--hwm", type=int, default=RuntimeConfig().sndhwm,
                    help="SNDHWM/RCVHWM of every socket (runtime default)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--profile", metavar="DIR", type=Path,
                    help="run every hop under cProfile and leave one .prof per hop in DIR "
                         "(slows the hops: for finding hot spots, not for figures)")
    args = ap.parse_args(argv)
    defaults = QUICK if args.quick else {"transports": "ipc,pipe", "hops": "1,3",
                                         "loads": "1000,10000,sat"}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.path_list = _choices(args.paths, {"raw", "runtime"}, "--paths")
        args.transport_list = _choices(args.transports, {"ipc", "pipe"}, "--transports")
        args.hop_list = [int(h) for h in args.hops.split(",")]
        args.rate_list = [0.0 if x == "sat" else float(x) for x in args.loads.split(",")]
    except ValueError as exc:
        ap.error(str(exc))
    if any(h < 1 for h in args.hop_list) or any(r < 0 for r in args.rate_list):
        ap.error("hops >= 1 and loads >= 0")
    return args


def _choices(text: str, allowed: set[str], flag: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise ValueError(f"{flag}: {', '.join(bad) or 'empty'}; choose from {', '.join(sorted(allowed))}")
    return items


def scenarios(args) -> list[Scenario]:
    out = []
    for transport in args.transport_list:
        for hops in args.hop_list:
            for rate in args.rate_list:
                for path in sorted(args.path_list):  # raw first, then runtime: same conditions
                    out.append(Scenario(path, transport, hops, rate,
                                        count_for(rate, args.scale, args.quick)))
    return out


def meta() -> dict:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "msgspec": msgspec.__version__,
            "payload_bytes": encoded_size(), "loadavg_at_start": os.getloadavg()[0]}


def _workdir() -> Path:
    # ipc paths are limited to 107 bytes: keep the directory short whatever TMPDIR is.
    base = tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="hpbench-", dir=base if len(base) < 40 else "/tmp"))


def _raise_interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed bench still cleans up
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    info = meta()
    print(f"# hedgepipe bench: {info['cores']} cores, Python {info['python']}, pyzmq {info['pyzmq']} "
          f"(libzmq {info['libzmq']}), msgspec {info['msgspec']}; md.book payload "
          f"{info['payload_bytes']} B; load average {info['loadavg_at_start']:.2f}", flush=True)
    work = _workdir()
    outcomes: list[Outcome] = []
    failed: list[str] = []
    code = 0
    started = time.monotonic()
    chain = None
    try:
        for i, sc in enumerate(scenarios(args)):
            run_dir = work / f"{i:02d}"
            run_dir.mkdir()
            chain = Chain(sc, run_dir, args.hwm, args.profile)
            try:
                outcome = chain.run()
            except RunError as exc:
                failed.append(str(exc))
                print(f"FAILED {exc}", file=sys.stderr, flush=True)
                continue
            finally:
                chain.stop()
            outcomes.append(outcome)
            s = outcome.sink
            print(f"  {sc.label:<28} {s['delivered_per_s']:>9,.0f}/s  p99 {s['p99_us']:>8,.0f} µs  "
                  f"lost {s['lost']}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        code = 130
    finally:
        # A second Ctrl-C must not cut the clean-up short: stop() is idempotent, run it again
        # in case the interrupt landed inside the first one.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if chain is not None:
            chain.stop()
        shutil.rmtree(work, ignore_errors=True)
    if code == 130:
        print("interrupted: every process stopped", file=sys.stderr)
    rs = report.rows(outcomes)
    print()
    print(report.table(rs))
    lines = report.targets(rs)
    if lines:
        print()
        print("targets (measured, not asserted):")
        for line in lines:
            print("  " + line)
    print(f"\n{len(outcomes)} runs in {time.monotonic() - started:.0f} s"
          + (f"; {len(failed)} FAILED" if failed else ""))
    if args.json:
        report.dump_json(args.json, {**info, "failed": failed}, rs)
    if failed and not code:
        code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
