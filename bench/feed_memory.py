"""``python -m bench.feed_memory``: feed-deribit's memory with a full BTC universe subscribed.

Starts ``deribit-sim`` (synthetic BTC market: every expiry, ``--max-strikes`` strikes each,
futures and the perpetual) and ``feed-deribit`` following all of it (books, tickers, trades),
publishing on an ipc endpoint that this bench subscribes to. It samples the feed's resident
memory (VmRSS) every second for ``--seconds`` and prints the instruments followed, the rate it
published, and RSS at the first sample, the peak and the end: flat means no growth under load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from hedgepipe import messages

BIN = Path(sys.executable).parent


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text)[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.feed_memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=20, help="how long to sample [20]")
    ap.add_argument("--max-strikes", type=int, default=60, help="strikes per expiry in the simulator [60]")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hpmem", dir="/tmp"))
    config = tmp / "feed.toml"
    config.write_text(f'[runtime]\nrun_dir = "{tmp}"\n[feed-deribit]\ncurrencies = ["BTC"]\n'
                      'interval = "100ms"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}
    sim = subprocess.Popen([str(BIN / "deribit-sim"), "--port", "0", "--seed", "1", "--currencies", "BTC",
                            "--max-strikes", str(args.max_strikes)], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env=env)
    procs = [sim]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        url = re.search(rb"listening (ws://\S+)", sim.stdout.readline())[1].decode()
        out = f"ipc://{tmp}/feed.sock"
        feed = subprocess.Popen([str(BIN / "feed-deribit"), "--config", str(config), "--url", url,
                                 "--out", out], stderr=subprocess.DEVNULL, env=env)
        procs.append(feed)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.connect(out)
        samples, frames, instruments = [], 0, 0
        start = time.monotonic()
        next_sample = start + 1
        while time.monotonic() - start < args.seconds:
            if sub.poll(100):
                while True:
                    try:
                        topic = sub.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    payload = sub.recv()
                    frames += 1
                    if topic.startswith(b"hb."):
                        hb = messages.decode(topic.decode(), payload)
                        instruments = hb.counters.get("instruments", instruments)
            if time.monotonic() >= next_sample:
                samples.append(rss_kib(feed.pid))
                next_sample += 1
        elapsed = time.monotonic() - start
        print(f"feed-deribit following {instruments} BTC instruments (books, tickers, trades, index), "
              f"{frames / elapsed:,.0f} frames/s published over {elapsed:.0f} s")
        print(f"RSS: first sample {samples[0] / 1024:.1f} MiB, peak {max(samples) / 1024:.1f} MiB, "
              f"last {samples[-1] / 1024:.1f} MiB")
    finally:
        sub.close(0)
        ctx.term()
        for p in reversed(procs):
            p.terminate()
            p.wait(10)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
