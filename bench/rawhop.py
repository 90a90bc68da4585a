"""The ceiling: one hop as a bare loop, no runtime.

``python -m bench.rawhop --in ENDPOINT|- --out ENDPOINT|- --instance NAME``

It does the work a runtime pass-through hop does on a frame (decode and validate the Book
with msgspec, restamp ``src`` and a per-topic ``seq``, re-encode, publish) and nothing else:
blocking ``recv`` without a poller, a plain PUB (which drops silently at its high-water
mark: the sink still counts what is lost), no counters, heartbeats or signal handling. On
a pipe it reads with ``msgpack.Unpacker`` and writes each read's output in one ``write``.
"""

from __future__ import annotations

import argparse
import os

import msgpack
import msgspec
import zmq

from hedgepipe.messages import Book

from .book import TOPIC_PREFIX
from .proc import quiet_interrupts


def zmq_loop(inp: str, out: str, name: str, hwm: int) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    pub = ctx.socket(zmq.PUB)
    for sock in (sub, pub):
        sock.setsockopt(zmq.LINGER, 0)  # a stopped hop must not wait on a dead peer
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.setsockopt(zmq.SUBSCRIBE, TOPIC_PREFIX.encode())
    sub.connect(inp)
    pub.setsockopt(zmq.SNDHWM, hwm)
    pub.bind(out)
    decode = msgspec.msgpack.Decoder(Book).decode
    encode = msgspec.msgpack.Encoder().encode
    recv, send = sub.recv, pub.send
    seqs: dict[bytes, int] = {}
    try:
        while True:
            topic = recv()
            msg = decode(recv())
            seq = seqs.get(topic, 0) + 1
            seqs[topic] = seq
            msg.src = name
            msg.seq = seq
            send(topic, zmq.SNDMORE)
            send(encode(msg))
    finally:
        sub.close()
        pub.close()
        ctx.term()


def pipe_loop(name: str, fd_in: int = 0, fd_out: int = 1) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    pack = msgpack.Packer(use_bin_type=True).pack
    decode = msgspec.msgpack.Decoder(Book).decode
    encode = msgspec.msgpack.Encoder().encode
    seqs: dict[str, int] = {}
    while True:
        data = os.read(fd_in, 1 << 16)
        if not data:
            return
        unpacker.feed(data)
        out = []
        for topic, payload in unpacker:
            if not topic.startswith(TOPIC_PREFIX):
                continue
            msg = decode(payload)
            seq = seqs.get(topic, 0) + 1
            seqs[topic] = seq
            msg.src = name
            msg.seq = seq
            out.append(pack([topic, encode(msg)]))
        view = memoryview(b"".join(out))
        while view:
            view = view[os.write(fd_out, view):]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rawhop", description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--instance", default="rawhop")
    ap.add_argument("--hwm", type=int, default=100_000)
    args = ap.parse_args(argv)
    quiet_interrupts()
    if (args.inp == "-") != (args.out == "-"):
        ap.error("--in and --out are both pipes or both sockets")
    try:
        if args.inp == "-":
            pipe_loop(args.instance)
        else:
            zmq_loop(args.inp, args.out, args.instance, args.hwm)
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
