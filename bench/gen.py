"""The generator: publishes ``md.book`` frames at an offered load, then an end marker.

``python -m bench.gen --out ENDPOINT|- --rate R --count N --ctl FD``

Until told ``go`` on the control channel it sends warm-up frames every few milliseconds, so
the chain's subscriptions propagate hop by hop (slow joiner) and every process is up; the
sink says ``ready`` on seeing the first one. Then it sends N frames on a fixed schedule
(``t0 + i/rate``: sleeping until each is due, catching up without sleeping when late) or,
with ``--rate 0``, as fast as the first hop takes them: sends block at the high-water mark
(XPUB_NODROP), so saturation is limited by the chain, not by drops at the source.

Each frame's ``ts_recv``/``ts_event`` is stamped with ``time.time_ns()`` just before it is
encoded: the sink's latency is measured from there.
"""

from __future__ import annotations

import argparse
import os
import time

import zmq

from hedgepipe import messages
from hedgepipe.pipeframe import encode_frame

from .book import END, WARMUP, make_books
from .proc import Channel, quiet_interrupts, tight_timers

WARMUP_PERIOD_S = 0.005
#: Quiet time between ``go`` and the first measured frame: the warm-up backlog drains.
SETTLE_S = 0.2


class ZmqSender:
    def __init__(self, endpoint: str, hwm: int):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)

    def send(self, topic: bytes, payload: bytes) -> None:
        self.sock.send(topic, zmq.SNDMORE)
        self.sock.send(payload)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class PipeSender:
    def __init__(self, fd: int = 1):
        self.fd = fd

    def send(self, topic: bytes, payload: bytes) -> None:
        view = memoryview(encode_frame(topic, payload))
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        os.close(self.fd)


def run(out, ctl: Channel, rate: float, count: int) -> None:
    books = make_books()
    nbooks = len(books)
    encode = messages.encode
    time_ns = time.time_ns
    seqs = [0] * nbooks  # seq counts per (src, topic): hops count gaps per topic

    def send(i: int, change_id: int) -> None:
        k = i % nbooks
        topic, book = books[k]
        seqs[k] += 1
        book.seq = seqs[k]
        book.change_id = change_id
        book.ts_event = book.ts_recv = time_ns()
        out.send(topic, encode(book))

    i = 0
    while True:  # warm-up until the sink has seen a frame
        send(i, WARMUP)
        i += 1
        cmd = ctl.recv(WARMUP_PERIOD_S)
        if cmd and cmd.get("cmd") == "go":
            break
        if ctl.eof:
            return
    time.sleep(SETTLE_S)

    perf = time.perf_counter
    sleep = time.sleep
    period = 1.0 / rate if rate > 0 else 0.0
    max_late = 0.0
    start_ns = time_ns()
    t0 = perf()
    for n in range(count):
        if period:
            due = t0 + n * period
            now = perf()
            if now < due:
                sleep(due - now)
            else:
                max_late = max(max_late, now - due)
        send(n, n + 1)
    end_ns = time_ns()
    ctl.send(event="done", sent=count, start_ns=start_ns, end_ns=end_ns,
             max_late_us=round(max_late * 1e6, 1))
    # The end marker may be refused by a full queue somewhere on the way; repeat it until
    # the orchestrator has heard from the sink. A pipe loses nothing: one marker, then EOF.
    while True:
        send(count, END)
        if isinstance(out, PipeSender):
            return
        if ctl.recv(0.01) is not None or ctl.eof:
            return


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gen", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="endpoint to bind, or - for stdout")
    ap.add_argument("--rate", type=float, required=True, help="msgs/s; 0 = as fast as possible")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--ctl", type=int, required=True, help="control channel fd")
    ap.add_argument("--hwm", type=int, default=100_000)
    args = ap.parse_args(argv)
    quiet_interrupts()
    tight_timers()
    ctl = Channel.from_fd(args.ctl)
    out = PipeSender() if args.out == "-" else ZmqSender(args.out, args.hwm)
    try:
        run(out, ctl, args.rate, args.count)
    except BrokenPipeError:  # the chain went away: the orchestrator reports it
        return 1
    finally:
        try:
            out.close()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
