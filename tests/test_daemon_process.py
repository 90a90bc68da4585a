"""Daemons as real processes: pipes, signals, exit codes, the metrics endpoint."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import urllib.request

import pytest
import zmq

from hedgepipe import messages as m
from hedgepipe.errors import EX_CONFIG, EX_UNAVAILABLE
from hedgepipe.pipeframe import FrameReader, encode_frame

from .conftest import PYTHON, REPO, VENV_BIN, free_tcp_port, wait_until
from .frames import TOPIC, book_payload


@pytest.fixture
def config(short_tmp):
    path = short_tmp / "hedgepipe.toml"
    path.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\nheartbeat_interval_s = 0.2\n'
                    'drain_timeout_s = 2.0\nmax_frame_bytes = 4096\n')
    return str(path)


def echo_cmd(config, *args):
    return [PYTHON, "-m", "tests.echo_daemon", "--config", config, *args]


def run(cmd, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}
    return subprocess.Popen(cmd, cwd=REPO, env=env, **kw)


def frames_of(data: bytes):
    reader = FrameReader(1 << 20)
    out = reader.feed(data)
    assert reader.pending == 0, "output ended inside a frame"
    return [(t.decode(), m.decode(t.decode(), p)) for t, p in out]


def test_pipe_stage_passes_good_frames_and_reports_bad_ones(config):
    stream = b"".join([
        encode_frame(TOPIC.encode(), book_payload(1)),
        b"\x00\x01garbage\xff",
        encode_frame(TOPIC.encode(), b"\xc1 not msgpack"),
        encode_frame(b"md.weather.x", book_payload(2)),
        encode_frame(TOPIC.encode(), b"y" * 5000),             # oversized (max 4096)
        encode_frame(TOPIC.encode(), book_payload(2)),
        encode_frame(TOPIC.encode(), book_payload(3))[:-4],     # truncated tail
    ])
    proc = run(echo_cmd(config, "--in", "-", "--out", "-"), stdin=subprocess.PIPE,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(stream, timeout=30)
    assert proc.returncode == 0, err.decode()
    got = frames_of(out)
    books = [msg.change_id for topic, msg in got if topic == TOPIC]
    assert books == [1001, 1002]
    hb = [msg for topic, msg in got if topic.startswith("hb.")][-1]
    assert hb.state == "draining"
    c = hb.counters
    assert (c["in_msgs"], c["decode_errors"], c["unknown_topics"], c["oversized"], c["truncated"]) == \
        (4, 2, 1, 1, 1)
    text = err.decode()
    for kind in ("decode_error", "unknown_topic", "oversized", "truncated"):
        assert kind in text


def test_a_forwarder_counts_the_gaps_of_frames_it_does_not_decode(config):
    """bus-relay (decode_inputs = False) still reads each envelope's src/seq: a frame lost
    upstream shows in its heartbeat, and payloads it cannot read are forwarded all the same."""
    seqs = [1, 2, 3, 6, 7]                                   # 4 and 5 lost upstream
    stream = b"".join(encode_frame(TOPIC.encode(), book_payload(i)) for i in seqs)
    stream += encode_frame(b"md.weather.x", b"\xc1 not msgpack")   # forwarded, not judged
    proc = run([str(VENV_BIN / "bus-relay"), "--config", config, "--in", "-", "--out", "-"],
               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(stream, timeout=30)
    assert proc.returncode == 0, err.decode()
    reader = FrameReader(1 << 20)
    got = reader.feed(out)
    assert [t for t, _ in got if not t.startswith(b"hb.")] == [TOPIC.encode()] * 5 + [b"md.weather.x"]
    hb = [m.decode(t.decode(), p) for t, p in got if t.startswith(b"hb.")][-1]
    assert hb.counters["gaps"] == 2 and hb.counters["decode_errors"] == 0
    assert "sequence gap" in err.decode()


def test_two_stage_pipeline_over_pipes(config):
    gen = b"".join(encode_frame(TOPIC.encode(), book_payload(i)) for i in range(1, 201))
    first = run(echo_cmd(config, "--in", "-", "--out", "-", "--instance", "e1"),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    second = run([str(VENV_BIN / "bus-relay"), "--config", config, "--in", "-", "--out", "-"],
                 stdin=first.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first.stdout.close()
    first.stdin.write(gen)
    first.stdin.close()
    out, _ = second.communicate(timeout=30)
    assert first.wait(10) == 0 and second.returncode == 0
    books = [msg for topic, msg in frames_of(out) if topic == TOPIC]
    assert [b.change_id for b in books] == list(range(1001, 1201))
    assert {b.src for b in books} == {"e1"}                # the relay forwarded bytes unchanged
    assert [b.seq for b in books] == list(range(1, 201))


def test_sigterm_mid_stream_on_a_pipe_drains_and_exits_zero(config):
    proc = run(echo_cmd(config, "--in", "-", "--out", "-"), stdin=subprocess.PIPE,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def feed():
        # An endless stream: whenever the signal lands, it lands mid-stream.
        i = 0
        try:
            while True:
                i += 1
                proc.stdin.write(encode_frame(TOPIC.encode(), book_payload(i)))
        except (BrokenPipeError, ValueError):
            pass  # the daemon stopped reading: expected after SIGTERM

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    reader = FrameReader(1 << 20)
    frames = []
    while len(frames) < 500:  # it is mid-stream: output is flowing
        frames.extend(reader.feed(os.read(proc.stdout.fileno(), 1 << 16)))
    proc.send_signal(signal.SIGTERM)
    # Keep reading stdout until the daemon closes it: a daemon blocked writing its last
    # frames into a full pipe could never exit.
    while chunk := os.read(proc.stdout.fileno(), 1 << 16):
        frames.extend(reader.feed(chunk))
    assert proc.wait(30) == 0
    writer.join(30)
    err = proc.stderr.read()
    assert reader.pending == 0
    decoded = [(t.decode(), m.decode(t.decode(), p)) for t, p in frames]
    books = [msg.change_id for topic, msg in decoded if topic == TOPIC]
    assert books == list(range(1001, 1001 + len(books)))   # contiguous: nothing lost or reordered
    last_hb = [msg for topic, msg in decoded if topic.startswith("hb.")][-1]
    assert last_hb.state == "draining"
    assert last_hb.counters["in_msgs"] == len(books)        # everything it read, it published
    assert b"signal received" in err


def test_sigterm_drains_everything_already_queued_on_the_pipe(short_tmp):
    """Frames already in the pipe when SIGTERM lands are all processed, then it exits 0."""
    import fcntl
    config = short_tmp / "slow.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\ndrain_timeout_s = 60\n')
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 1 << 20)                           # F_SETPIPE_SZ: room for all of it
    n = 3000
    data = b"".join(encode_frame(TOPIC.encode(), book_payload(i)) for i in range(1, n + 1))
    assert len(data) < 1 << 20
    os.write(w, data)                                       # all queued before the daemon starts
    proc = run(echo_cmd(str(config), "--in", "-", "--out", "-", "--set", "delay_ms=0.5"),
               stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r)
    reader = FrameReader(1 << 20)
    frames = []
    while not frames:                                       # it has started working through them
        frames.extend(reader.feed(os.read(proc.stdout.fileno(), 1 << 16)))
    proc.send_signal(signal.SIGTERM)                        # ~1.5 s of work still queued
    while chunk := os.read(proc.stdout.fileno(), 1 << 16):
        frames.extend(reader.feed(chunk))
    assert proc.wait(30) == 0, proc.stderr.read().decode()
    os.close(w)                                             # (the writer never closed: no EOF)
    decoded = [(t.decode(), m.decode(t.decode(), p)) for t, p in frames]
    books = [msg.change_id for topic, msg in decoded if topic == TOPIC]
    assert books == list(range(1001, 1001 + n))             # every queued frame came out
    assert [msg for topic, msg in decoded if topic.startswith("hb.")][-1].counters["in_msgs"] == n


def test_sigterm_drains_frames_queued_on_a_socket(config, short_tmp):
    ctx = zmq.Context()
    upstream = ctx.socket(zmq.XPUB)
    # The runtime's mark, not libzmq's default 1000: a 2000-frame burst in well under a
    # millisecond would otherwise meet libzmq's lazily refreshed pipe credit and be dropped.
    upstream.setsockopt(zmq.SNDHWM, 100_000)
    upstream.bind(f"ipc://{short_tmp}/up.sock")
    proc = run(echo_cmd(config, "--in", f"ipc://{short_tmp}/up.sock", "--out", "-",
                        "--set", "delay_ms=0.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert upstream.poll(10_000), "echo never subscribed"
    upstream.recv()
    n = 2000  # several read batches (512), ~1 s of work: most of it is queued at SIGTERM
    for i in range(1, n + 1):
        upstream.send(TOPIC.encode(), zmq.SNDMORE)
        upstream.send(book_payload(i))
    reader = FrameReader(1 << 20)
    frames = []
    while not any(t == TOPIC.encode() for t, _ in frames):
        frames.extend(reader.feed(os.read(proc.stdout.fileno(), 1 << 16)))
    proc.send_signal(signal.SIGTERM)
    while chunk := os.read(proc.stdout.fileno(), 1 << 16):
        frames.extend(reader.feed(chunk))
    assert proc.wait(30) == 0
    books = [m.decode(t.decode(), p).change_id for t, p in frames if t == TOPIC.encode()]
    assert books == list(range(1001, 1001 + n))
    upstream.close(0)
    ctx.term()


def test_sigterm_with_a_reader_that_never_reads_still_exits(config, short_tmp):
    """A full stdout pipe must not hold a stopping daemon past its drain deadline."""
    fifo = short_tmp / "out.fifo"
    os.mkfifo(fifo)
    reader_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    stream = b"".join(encode_frame(TOPIC.encode(), book_payload(i)) for i in range(1, 5001))
    with open(fifo, "wb") as out:
        proc = run(echo_cmd(config, "--in", "-", "--out", "-"), stdin=subprocess.PIPE,
                   stdout=out, stderr=subprocess.PIPE)

    def feed():  # far more than the fifo holds: this blocks once the daemon is stuck
        try:
            proc.stdin.write(stream)
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    wait_until(lambda: _fifo_full(fifo), timeout=10, what="the output pipe to fill")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0                               # drain_timeout_s is 2 s
    err = proc.stderr.read().decode()
    assert "frames not written" in err
    os.close(reader_fd)


def _fifo_full(path) -> bool:
    """True once a non-blocking writer can no longer add a byte."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        return not select.select([], [fd], [], 0)[1]
    finally:
        os.close(fd)


def test_sigterm_on_sockets_publishes_a_final_heartbeat(config, short_tmp):
    ctx = zmq.Context()
    upstream = ctx.socket(zmq.XPUB)
    upstream.bind(f"ipc://{short_tmp}/up.sock")
    proc = run(echo_cmd(config, "--in", f"ipc://{short_tmp}/up.sock", "--out", f"ipc://{short_tmp}/echo.sock"),
               stderr=subprocess.PIPE)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"ipc://{short_tmp}/echo.sock")
    assert upstream.poll(10_000), "echo never subscribed"
    upstream.recv()
    # Our SUB is connected once we hear a heartbeat.
    assert sub.poll(10_000)
    for i in range(1, 101):
        upstream.send(TOPIC.encode(), zmq.SNDMORE)
        upstream.send(book_payload(i))
    seen = []
    while len(seen) < 100:
        assert sub.poll(10_000)
        topic, payload = sub.recv().decode(), sub.recv()
        if topic == TOPIC:
            seen.append(m.decode(topic, payload).change_id)
    proc.send_signal(signal.SIGTERM)
    final = None
    while final is None or final.state != "draining":
        assert sub.poll(10_000), "no final heartbeat"
        topic, payload = sub.recv().decode(), sub.recv()
        if topic.startswith("hb."):
            final = m.decode(topic, payload)
    assert proc.wait(10) == 0
    assert seen == list(range(1001, 1101))
    assert final.counters["in_msgs"] == 100 and final.counters["out_msgs"] >= 100
    sub.close(0)
    upstream.close(0)
    ctx.term()


@pytest.mark.parametrize("args, text", [
    (["--out", "foo://bar"], "want ipc://"),
    (["--out", "ipc:///nonexistent-hedgepipe-dir/x.sock"], "does not exist"),
    (["--set", "depht=3"], "depht"),
    (["--in", "no-such-daemon"], "no-such-daemon"),
])
def test_config_errors_exit_78_with_a_clear_message(config, args, text):
    proc = run(echo_cmd(config, *args), stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EX_CONFIG
    assert text in err.decode()
    assert "Traceback" not in err.decode()


def test_typo_in_the_config_file_exits_78(short_tmp):
    path = short_tmp / "typo.toml"
    path.write_text(f'[runtime]\nrun_dir = "{short_tmp}"\nheartbeat_intervl_s = 1\n')
    proc = run(echo_cmd(str(path), "--in", "-", "--out", "-"), stderr=subprocess.PIPE,
               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EX_CONFIG and b"heartbeat_intervl_s" in err


def test_address_in_use_exits_69(config):
    port = free_tcp_port()
    ctx = zmq.Context()
    holder = ctx.socket(zmq.PUB)
    holder.bind(f"tcp://127.0.0.1:{port}")
    proc = run(echo_cmd(config, "--out", f"tcp://127.0.0.1:{port}"), stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    holder.close(0)
    ctx.term()
    assert proc.returncode == EX_UNAVAILABLE and b"cannot bind" in err


def test_metrics_endpoint_serves_counters(config, short_tmp):
    port = free_tcp_port()
    proc = run(echo_cmd(config, "--out", f"ipc://{short_tmp}/m.sock", "--metrics-port", str(port)),
               stderr=subprocess.DEVNULL)
    try:
        def scrape():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
            except OSError:
                return None
        body = wait_until(scrape, timeout=10, what="metrics endpoint")
        assert 'hedgepipe_in_msgs_total{instance="echo"} 0' in body
        assert "# TYPE hedgepipe_subscriptions gauge" in body
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
