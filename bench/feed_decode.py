"""``python -m bench.feed_decode``: feed-deribit's JSON decode and decode->normalize rates.

Replays the notification lines of the recorded Deribit WebSocket session (``DERIBIT.ws.1.0``: 89
tickers, 46 book snapshots/changes of 10 options) many times, in one process on one core, and
prints microseconds per message and messages per second for:

- decode alone, with each candidate decoder: stdlib ``json.loads``, ``msgspec.json.decode``
  (generic, to dicts) on str and on bytes, and a typed ``msgspec.json.Decoder`` for the
  notification envelope whose ``data`` stays raw and is decoded in a second step;
- decode -> normalize: the decoder, then ``DeribitMarketData.on_notification`` building the
  ``md.*`` messages (a fresh normalizer for every pass over the recording, so every pass
  rebuilds its books from the snapshots instead of ignoring them as duplicates).

Each figure is the best of ``--runs`` runs. docs/deribit.md records the numbers and the choice.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import msgspec

from hedgepipe import messages
from hedgepipe.pipeframe import encode_frame
from hedgepipe.venues.deribit.instruments import parse_get_instruments_body, parse_instrument
from hedgepipe.venues.deribit.marketdata import DeribitMarketData, subscription_parts

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HEDGEPIPE_DATA", REPO.parent / "shared" / "data")) / "deribit"


class _Params(msgspec.Struct):
    channel: str
    data: msgspec.Raw


class _Notification(msgspec.Struct):
    method: str
    params: _Params


_envelope = msgspec.json.Decoder(_Notification)
_generic = msgspec.json.decode


def _typed_envelope(text):
    note = _envelope.decode(text)
    return {"method": note.method,
            "params": {"channel": note.params.channel, "data": _generic(note.params.data)}}


DECODERS = {
    "json.loads (str)": (json.loads, False),
    "msgspec.json.decode (str)": (_generic, False),
    "msgspec.json.decode (bytes)": (_generic, True),
    "msgspec typed envelope + raw data (str)": (_typed_envelope, False),
}
#: The decoder the feed uses; the publish stage is measured with it only.
CHOSEN = "msgspec.json.decode (str)"


def load_notifications(path: Path) -> list[str]:
    """The JSON text of every ``subscription`` line of a ``<ts>: <frame>`` recording."""
    out = []
    for line in path.read_text().splitlines():
        ts, sep, body = line.partition(": ")
        if sep and ts.replace(".", "", 1).isdigit() and '"method":"subscription"' in body:
            out.append(body)
    return out


def load_universe(path: Path) -> dict:
    universe = {}
    for line in path.read_text().splitlines():
        if " -> " in line:
            for raw in parse_get_instruments_body(line):
                inst = parse_instrument(raw)
                universe[inst.name] = inst
    return universe


def _best(runs: int, fn) -> float:
    """Best wall time in seconds of ``runs`` calls (collector paused, as in timeit)."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


def measure(lines: list[str], universe: dict, passes: int, runs: int) -> list[tuple[str, str, float]]:
    """(decoder, stage, seconds per message) for every decoder and both stages."""
    as_bytes = [line.encode() for line in lines]
    n = len(lines) * passes
    rows = []
    for label, (decode, wants_bytes) in DECODERS.items():
        frames = as_bytes if wants_bytes else lines

        def decode_only():
            for _ in range(passes):
                for text in frames:
                    decode(text)

        def decode_normalize():
            published = _normalize(frames, decode, universe, passes, publish=False)
            if published != n:  # every recorded notification publishes exactly one message
                raise RuntimeError(f"published {published} messages for {n} notifications")

        rows.append((label, "decode", _best(runs, decode_only) / n))
        rows.append((label, "decode+normalize", _best(runs, decode_normalize) / n))
        if label == CHOSEN:
            rows.append((label, "+publish", _best(runs, lambda: _normalize(
                frames, decode, universe, passes, publish=True)) / n))
    return rows


def _normalize(frames, decode, universe, passes, publish: bool) -> int:
    """decode -> normalize, and with ``publish`` what the runtime does next: stamp, encode,
    frame. Returns how many messages were produced."""
    out_seq: dict[str, int] = {}
    produced = 0
    for _ in range(passes):
        md = DeribitMarketData(instruments=universe)
        on_notification = md.on_notification
        for i, text in enumerate(frames):
            channel, data = subscription_parts(decode(text))
            outs, _resync = on_notification(channel, data, i)
            produced += len(outs)
            if publish:
                for topic, msg in outs:
                    seq = out_seq[topic] = out_seq.get(topic, 0) + 1
                    msg.src, msg.seq = "feed-deribit", seq
                    encode_frame(topic.encode(), messages.encode(msg))
    return produced


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.feed_decode", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help=f"folder with DERIBIT.ws.1.0 and DERIBIT.0 [{DATA}]")
    ap.add_argument("--passes", type=int, default=400, help="replays of the recording per run [400]")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the best is shown [3]")
    args = ap.parse_args(argv)
    ws, rest = args.data / "DERIBIT.ws.1.0", args.data / "DERIBIT.0"
    if not ws.is_file() or not rest.is_file():
        # `make bench` runs this too; on a clone without the shared data it says so and goes on.
        print(f"feed decode bench skipped: recorded data not found in {args.data} "
              "(set HEDGEPIPE_DATA or --data)", file=sys.stderr)
        return 0
    lines = load_notifications(ws)
    universe = load_universe(rest)
    avg = sum(map(len, lines)) / len(lines)
    print(f"{len(lines)} notifications (avg {avg:.0f} bytes) x {args.passes} passes, best of {args.runs} runs; "
          f"Python {sys.version.split()[0]}, msgspec {msgspec.__version__}")
    print(f"{'decoder':<42} {'stage':<17} {'us/msg':>8} {'msg/s':>10}")
    for label, stage, seconds in measure(lines, universe, args.passes, args.runs):
        print(f"{label:<42} {stage:<17} {seconds * 1e6:>8.2f} {1 / seconds:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
