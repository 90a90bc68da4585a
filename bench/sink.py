"""The sink: receives the chain's output and reports latency percentiles and losses.

``python -m bench.sink --in ENDPOINT|- --count N --ctl FD``

Latency of a frame = the sink's ``time.time_ns()`` when the frame came out of the socket
(or out of ``os.read`` on a pipe) minus the ``ts_recv`` the generator stamped; both
processes read the same host clock. Warm-up frames are discarded (the first one makes the
sink say ``ready``); the end marker, or EOF on a pipe, ends the run.
"""

from __future__ import annotations

import argparse
import os
import time

import msgpack
import msgspec
import zmq

from hedgepipe.messages import Book

from .book import END, TOPIC_PREFIX, WARMUP
from .proc import Channel, quiet_interrupts

_TOPIC_PREFIX_B = TOPIC_PREFIX.encode()


def zmq_frames(endpoint: str, hwm: int):
    """Yield (receive time ns, payload) from a SUB socket."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, _TOPIC_PREFIX_B)
    sock.connect(endpoint)
    recv = sock.recv
    time_ns = time.time_ns
    try:
        while True:
            recv()
            payload = recv()
            yield time_ns(), payload
    finally:
        sock.close(0)
        ctx.term()


def pipe_frames(fd: int = 0):
    """Yield (receive time ns, payload) from a ``[topic, payload]`` stream, to EOF."""
    unpacker = msgpack.Unpacker(raw=False)
    time_ns = time.time_ns
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            return
        now = time_ns()
        unpacker.feed(data)
        for topic, payload in unpacker:
            if topic.startswith(TOPIC_PREFIX):  # heartbeats of runtime hops also come this way
                yield now, payload


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def measure(frames, count: int, ctl: Channel) -> dict:
    decode = msgspec.msgpack.Decoder(Book).decode
    seen = bytearray(count + 1)
    lat: list[int] = []
    append = lat.append
    dupes = reordered = last_id = 0
    first_ns = last_ns = 0
    ready = False
    for now, payload in frames:
        book = decode(payload)
        cid = book.change_id
        if cid > 0:
            append(now - book.ts_recv)
            if seen[cid]:
                dupes += 1
            seen[cid] = 1
            if cid < last_id:
                reordered += 1
            last_id = cid
            if not first_ns:
                first_ns = now
            last_ns = now
        elif cid == WARMUP:
            if not ready:
                ready = True
                ctl.send(event="ready")
        elif cid == END:
            break
    lat.sort()
    received = len(lat) - dupes
    span = (last_ns - first_ns) / 1e9
    return {"event": "result", "received": received, "lost": count - received, "dupes": dupes,
            "reordered": reordered, "first_ns": first_ns, "last_ns": last_ns,
            "delivered_per_s": (received - 1) / span if span > 0 else 0.0,
            "p50_us": percentile(lat, 0.50) / 1e3, "p99_us": percentile(lat, 0.99) / 1e3,
            "p999_us": percentile(lat, 0.999) / 1e3, "max_us": (lat[-1] if lat else 0) / 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="inp", required=True, help="endpoint to connect, or - for stdin")
    ap.add_argument("--count", type=int, required=True, help="measured frames the generator sends")
    ap.add_argument("--ctl", type=int, required=True, help="control channel fd")
    ap.add_argument("--hwm", type=int, default=100_000)
    args = ap.parse_args(argv)
    quiet_interrupts()
    ctl = Channel.from_fd(args.ctl)
    frames = pipe_frames() if args.inp == "-" else zmq_frames(args.inp, args.hwm)
    try:
        result = measure(frames, args.count, ctl)
    finally:
        frames.close()
    ctl.send(**result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
