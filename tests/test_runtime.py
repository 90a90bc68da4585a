"""The runtime between real ZeroMQ sockets: pass-through, every kind of bad input, drops."""

from __future__ import annotations

import threading

import pytest
import zmq

from hedgepipe import messages as m
from hedgepipe.config import RuntimeConfig
from hedgepipe.runtime import Runtime, Service, Timer, run_handler

from .conftest import wait_until
from .echo_daemon import EchoService
from .frames import TOPIC, book, book_payload, raw_map, valid_book_fields


class Bench:
    """A runtime in a thread, fed by a test XPUB and read by a test SUB."""

    def __init__(self, tmp, service, **cfg):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.bind(f"ipc://{tmp}/in.sock")
        cfg.setdefault("heartbeat_interval_s", 0.05)
        self.rt = Runtime(service, RuntimeConfig(run_dir=str(tmp), **cfg),
                          inputs=[f"ipc://{tmp}/in.sock"], output=f"ipc://{tmp}/out.sock",
                          topics=[""], instance="echo")
        self.thread = threading.Thread(target=self.rt.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.rt.state == "running", what="runtime running")
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"ipc://{tmp}/out.sock")
        # Both joins are confirmed, not assumed: a heartbeat reaching our SUB proves the
        # runtime's output is connected to us, and our XPUB sees the runtime's subscription.
        self.recv_until("hb.")
        assert self.pub.poll(5000), "runtime never subscribed to its input"
        self.pub.recv()

    def send(self, *parts: bytes):
        for part in parts[:-1]:
            self.pub.send(part, zmq.SNDMORE)
        self.pub.send(parts[-1])

    def recv_any(self, timeout_ms=5000):
        assert self.sub.poll(timeout_ms), "nothing published"
        topic = self.sub.recv()
        payload = self.sub.recv()
        return topic.decode(), payload

    def recv_until(self, topic_prefix: str):
        while True:
            topic, payload = self.recv_any()
            if topic.startswith(topic_prefix):
                return topic, payload

    def recv(self):
        """The next frame that is not a heartbeat."""
        while True:
            topic, payload = self.recv_any()
            if not topic.startswith("hb."):
                return topic, payload

    def close(self):
        self.rt.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.pub.close(0)
        self.sub.close(0)
        self.ctx.term()


@pytest.fixture
def bench(short_tmp):
    made = []

    def make(service=None, **cfg):
        b = Bench(short_tmp, service or EchoService(EchoService.Config()), **cfg)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def test_pass_through_restamps_envelope_and_keeps_timestamps(bench):
    b = bench()
    for seq in (1, 2, 3):
        b.send(TOPIC.encode(), book_payload(seq, src="upstream"))
    for seq in (1, 2, 3):
        topic, payload = b.recv()
        msg = m.decode(topic, payload)
        assert topic == TOPIC
        assert (msg.src, msg.seq) == ("echo", seq)
        assert msg.change_id == 1000 + seq
        assert msg.ts_event == book(seq).ts_event and msg.ts_recv == book(seq).ts_recv
    assert b.rt.counters.in_msgs == 3 and b.rt.service.stats["echoed"] == 3


def test_output_seq_counts_per_topic():
    svc = EchoService(EchoService.Config())
    other = "md.book.deribit.OTHER"
    out = run_handler(svc, [(TOPIC, book(1)), (other, book(1, instrument="O")), (TOPIC, book(2))])
    assert [(t, msg.src, msg.seq) for t, msg in out] == [
        (TOPIC, "echo", 1), (other, "echo", 1), (TOPIC, "echo", 2)]


def test_run_handler_catches_a_mistyped_output():
    class Sloppy(Service):
        name = "sloppy"

        def on_start(self):
            return [("md.index.x.btc_usd", m.Index(venue="x", name="btc_usd", price="65000"))]

    with pytest.raises(m.FrameError, match="price"):
        run_handler(Sloppy(Sloppy.Config()), [])


BAD_INPUTS = [
    ("decode_errors", (TOPIC.encode(), b"\xc1\xc1\xc1 garbage")),
    ("decode_errors", (TOPIC.encode(), raw_map(**{**valid_book_fields(), "bids": "lots"}))),
    ("decode_errors", (TOPIC.encode(), raw_map(**{k: v for k, v in valid_book_fields().items()
                                                  if k != "asks"}))),
    ("decode_errors", (TOPIC.encode(), raw_map(**valid_book_fields(), extra=1))),
    ("envelope_errors", (TOPIC.encode(), raw_map(**{**valid_book_fields(), "src": ""}))),
    ("unknown_topics", (b"md.weather.paris", book_payload(1))),
    ("bad_frames", (b"md.book.deribit.one-part",)),
    ("bad_frames", (TOPIC.encode(), book_payload(1), b"third part")),
    ("oversized", (TOPIC.encode(), b"\x00" * 5000)),
    ("decode_errors", (b"\xff\xfe not utf-8", book_payload(1))),
]


@pytest.mark.parametrize("counter, parts", BAD_INPUTS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_counted_and_nothing_else_is_lost(bench, counter, parts):
    b = bench(max_frame_bytes=4096)
    b.send(TOPIC.encode(), book_payload(1, src="up"))
    b.send(*parts)
    b.send(TOPIC.encode(), book_payload(2, src="up"))
    seqs = [m.decode(*b.recv()).change_id for _ in range(2)]
    assert seqs == [1001, 1002]                      # the frames around it both arrive
    counters = b.rt.counters.as_dict()
    assert counters[counter] == 1
    others = {k: v for k, v in counters.items() if k not in (counter, "in_msgs", "out_msgs")}
    assert not any(others.values()), others          # and nothing else went wrong
    assert b.thread.is_alive()


def test_sequence_gaps_and_restarts_are_counted_per_source_and_topic(bench):
    b = bench()
    for src, seq in [("a", 1), ("a", 2), ("a", 5), ("b", 1), ("a", 1)]:
        b.send(TOPIC.encode(), book_payload(seq, src=src))
    for _ in range(5):
        b.recv()
    assert b.rt.counters.gaps == 2                   # a: 3 and 4 missing; b's seq is its own
    assert b.rt.counters.seq_resets == 1             # a restarted at 1


def test_handler_exception_is_counted_and_the_daemon_goes_on(bench):
    b = bench()
    b.send(TOPIC.encode(), book_payload(1, instrument="BOOM"))
    b.send(TOPIC.encode(), book_payload(2))
    assert m.decode(*b.recv()).change_id == 1002
    assert b.rt.counters.handler_errors == 1


def test_heartbeat_carries_counters_and_lag(bench):
    b = bench()
    b.send(TOPIC.encode(), book_payload(1))
    b.send(b"md.weather.x", book_payload(1))

    def beat_with_input():
        topic, payload = b.recv_until("hb.")
        hb = m.decode(topic, payload)
        return hb if hb.counters["in_msgs"] == 2 else None

    hb = wait_until(beat_with_input, what="a heartbeat counting both inputs")
    assert hb.name == "echo" and hb.state == "running"
    assert hb.counters["unknown_topics"] == 1
    assert hb.counters["echoed"] == 1                # the service's own counters too
    assert hb.counters["subscriptions"] == 1  # our SUB, subscribed to ""


def test_timers_publish_and_a_failing_timer_is_counted(bench):
    class Ticking(Service):
        name = "ticking"

        def timers(self):
            return [Timer(0.01, self.tick, "tick"), Timer(0.01, self.fail, "fail")]

        def tick(self, now_ns):
            return [("md.index.test.btc_usd", m.Index(venue="test", name="btc_usd", price=1.0))]

        def fail(self, now_ns):
            raise RuntimeError("timer bug")

    b = bench(Ticking(Ticking.Config()))
    topic, payload = b.recv_until("md.index")
    assert m.decode(topic, payload).price == 1.0
    wait_until(lambda: b.rt.counters.handler_errors >= 1, what="timer error counted")


def _sub(ctx, endpoint, rcvhwm, prefix=b""):
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    return sock


def _wait_subscriptions(out, n):
    wait_until(lambda: (out.pump_subscriptions(), out.subscriptions >= n)[1], what=f"{n} subscriptions")


def test_refuse_policy_counts_what_the_high_water_mark_refuses(short_tmp):
    from hedgepipe.bus import ZmqOutput
    ctx = zmq.Context()
    endpoint = f"ipc://{short_tmp}/hwm.sock"
    out = ZmqOutput(ctx, endpoint, sndhwm=10, linger_ms=0, when_full="refuse")
    slow = _sub(ctx, endpoint, rcvhwm=10)
    _wait_subscriptions(out, 1)
    results = [out.send(b"md.x", b"x" * 4096) for _ in range(20_000)]  # 80 MB: past every buffer
    assert 0 < results.count(False) < 20_000        # refused frames are reported, never silent
    slow.close(0)
    out.close()
    ctx.term()


def test_drop_policy_a_stalled_subscriber_does_not_starve_the_others(short_tmp):
    from hedgepipe.bus import ZmqOutput
    from hedgepipe.seqtrack import SeqTracker
    ctx = zmq.Context()
    endpoint = f"ipc://{short_tmp}/hwm.sock"
    # A realistic mark: libzmq refreshes a pipe's credit lazily (about once per ms of socket
    # activity), so with a mark of ~10 even a subscriber that keeps up loses frames.
    out = ZmqOutput(ctx, endpoint, sndhwm=1000, linger_ms=0, when_full="drop")
    # Distinct prefixes, so the XPUB reports both subscriptions (it merges equal ones).
    stalled = _sub(ctx, endpoint, rcvhwm=10, prefix=b"md.")   # a zmq-tap suspended with Ctrl-Z
    fast = _sub(ctx, endpoint, rcvhwm=10, prefix=b"md.book")
    _wait_subscriptions(out, 2)
    n = 3000
    for seq in range(1, n + 1):
        assert out.send(TOPIC.encode(), book_payload(seq, src="pub", asks=[(0.05, 1.0)] * 200))
        assert fast.poll(5000)                       # the fast one keeps up, frame by frame
        topic, payload = fast.recv(), fast.recv()
        assert m.decode(topic.decode(), payload).seq == seq
    seqs, missed, got = SeqTracker(), 0, 0

    def read_stalled():
        nonlocal missed, got
        while stalled.poll(200):
            topic, payload = stalled.recv().decode(), stalled.recv()
            got += 1
            missed += max(0, seqs.observe("pub", topic, m.decode(topic, payload).seq))

    read_stalled()                                   # it wakes up: a prefix of the stream
    assert 0 < got < n
    out.send(TOPIC.encode(), book_payload(n + 1, src="pub"))   # the stream goes on
    read_stalled()
    # The stalled subscriber lost frames, and its sequence numbers say exactly how many.
    assert got + missed == n + 1 and missed > 0
    for sock in (stalled, fast):
        sock.close(0)
    out.close()
    ctx.term()


def test_a_second_publisher_cannot_steal_a_live_ipc_endpoint(short_tmp):
    from hedgepipe.bus import ZmqOutput
    from hedgepipe.errors import EndpointError
    ctx = zmq.Context()
    endpoint = f"ipc://{short_tmp}/one.sock"
    first = ZmqOutput(ctx, endpoint, sndhwm=10, linger_ms=0)
    with pytest.raises(EndpointError, match="another process"):
        ZmqOutput(ctx, endpoint, sndhwm=10, linger_ms=0)
    first.close()
    # A file left by a dead publisher is no obstacle.
    (short_tmp / "stale.sock").write_bytes(b"")
    ZmqOutput(ctx, f"ipc://{short_tmp}/stale.sock", sndhwm=10, linger_ms=0).close()
    ctx.term()


def test_a_service_source_is_polled_and_its_items_handled(bench):
    """A non-bus input (what a venue connection is) feeds on_source; errors are counted."""
    import socket as socketlib
    from hedgepipe.runtime import Source

    class LineSource(Source):
        endpoints = ["test-lines"]

        def start(self):
            self._r, self.w = socketlib.socketpair()
            self._r.setblocking(False)
            self.handle = self._r.fileno()

        def read(self):
            data = self._r.recv(65536)
            if not data:
                self.eof = True
            return data.decode().split()

        def close(self):
            self._r.close()
            self.w.close()

    source = LineSource()

    class Indexer(Service):
        name = "indexer"

        def sources(self):
            return [source]

        def on_source(self, src, item):
            if item == "boom":
                raise ValueError("bad item")
            return [("md.index.test.btc_usd", m.Index(venue="test", name="btc_usd", price=float(item)))]

    b = bench(Indexer(Indexer.Config()))
    source.w.send(b"101.5 boom 102.5")
    prices = [m.decode(*b.recv()).price for _ in range(2)]
    assert prices == [101.5, 102.5]
    assert b.rt.counters.handler_errors == 1
