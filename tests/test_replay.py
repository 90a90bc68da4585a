"""hedgepipe replay: the schedule on a fake clock, then the real command on real pipes and
sockets, through real daemons, and every bad input."""

from __future__ import annotations

import gzip
import os
import pty
import re
import select
import signal
import subprocess
import time

import msgspec
import pytest
import zmq

from hedgepipe.clock import FakeClock
from hedgepipe.errors import EX_DATAERR, EX_UNAVAILABLE
from hedgepipe.journal import MAGIC, Record
from hedgepipe.pipeframe import FrameReader
from hedgepipe.tools.journal_input import EX_NOINPUT, merged_records
from hedgepipe.tools.replay import FileCount, Pacer, ReplayResult, StopRequest, replay_records

from ._journal_helpers import (HEDGEPIPE, SEC, T0, clean_env, frames_of, md_records, recorded_md,
                               run_tool, write_journal)
from .conftest import VENV_BIN, free_tcp_port

# ---- the schedule, on a fake clock ------------------------------------------------------------


class FakeSender:
    """Records the fake clock's time at each send; a send may cost time."""

    def __init__(self, clock: FakeClock, send_cost_s: float = 0.0):
        self.clock, self.cost = clock, send_cost_s
        self.sent: list[tuple[float, bytes]] = []
        self.broken = False
        self.lost = 0

    def send(self, topic, payload):
        self.sent.append((round(self.clock.monotonic(), 9), topic))
        self.clock.advance(self.cost)

    def flush(self):
        pass

    def idle(self):
        pass


def schedule(stamps_s, speed=1.0, send_cost_s=0.0, afap=False):
    """(send times relative to the first, the sleeps asked for) of records stamped ``stamps_s``."""
    clock = FakeClock()
    clock.advance(100.0)  # the monotonic origin is not zero
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock.advance(seconds)

    sender = FakeSender(clock, send_cost_s)
    items = [(0, Record(T0 + int(s * SEC), f"t{i}".encode(), b"")) for i, s in enumerate(stamps_s)]
    pacer = None if afap else Pacer(speed, clock.monotonic)
    result = ReplayResult([FileCount("f")])
    replay_records(items, lambda r: True, sender, pacer, clock.monotonic, sleep, StopRequest(), result)
    start = sender.sent[0][0]
    return [round(t - start, 6) for t, _ in sender.sent], sleeps


def test_records_go_out_at_their_original_spacing():
    times, sleeps = schedule([0, 1, 1.5, 3, 3, 3.25])
    assert times == [0, 1, 1.5, 3, 3, 3.25]
    assert all(s > 0 for s in sleeps)


def test_speed_divides_the_spacing():
    assert schedule([0, 1, 1.5, 3], speed=2)[0] == [0, 0.5, 0.75, 1.5]
    assert schedule([0, 1, 1.5, 3], speed=0.5)[0] == [0, 2, 3, 6]


def test_time_spent_sending_does_not_accumulate_into_drift():
    # each send takes 0.3 s: deadlines are absolute, so every record still goes at its time
    times, _ = schedule([0, 1, 2, 3, 4], send_cost_s=0.3)
    assert times == [0, 1, 2, 3, 4]
    # sending slower than the records came: late ones go at once, never a negative sleep,
    # and the schedule catches up as soon as there is room
    times, sleeps = schedule([0, 0.1, 0.2, 0.3, 2.0], send_cost_s=0.3)
    assert times == [0, 0.3, 0.6, 0.9, 2.0]
    assert all(s > 0 for s in sleeps)


def test_a_record_stamped_before_the_previous_is_sent_at_once_and_the_schedule_continues_from_it():
    # the writer's clock went back 1 s after the record at 2 s
    times, sleeps = schedule([0, 2, 1, 1.5, 3])
    assert times == [0, 2, 2, 2.5, 4]
    assert all(s > 0 for s in sleeps)


def test_as_fast_as_possible_never_sleeps():
    times, sleeps = schedule([0, 1, 5, 3600], afap=True)
    assert times == [0, 0, 0, 0] and sleeps == []


def test_long_waits_are_sliced_so_a_stop_request_is_noticed():
    clock = FakeClock()
    stop = StopRequest()
    sender = FakeSender(clock)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock.advance(seconds)
        if len(sleeps) == 3:
            stop.signum = signal.SIGINT

    items = [(0, Record(T0 + i * 3600 * SEC, b"t", b"")) for i in range(3)]
    result = ReplayResult([FileCount("f")])
    replay_records(items, lambda r: True, sender, Pacer(1.0, clock.monotonic), clock.monotonic, sleep,
                   stop, result)
    assert len(sender.sent) == 1 and len(sleeps) == 3  # one frame, then a stop mid-wait
    assert result.stopped == "stopped by SIGINT"
    assert (result.files[0].read, result.files[0].sent) == (2, 1)


def test_files_are_merged_by_record_time_and_ties_go_to_the_file_named_first(tmp_path):
    a = [(T0 + t * SEC, b"md.book.deribit.A", b"a%d" % t) for t in (0, 2, 4, 4)]
    b = [(T0 + t * SEC, b"hb.feed", b"b%d" % t) for t in (1, 2, 3, 5)]
    files = write_journal(tmp_path / "j", a + b)  # two families, two files
    assert [f.name for f in files] == ["hb.0001.hpj.gz", "md.0001.hpj.gz"]
    got = [r.payload for _, r in merged_records(files, lambda p: None)]
    assert got == [b"a0", b"b1", b"b2", b"a2", b"b3", b"a4", b"a4", b"b5"]
    got = [r.payload for _, r in merged_records(files[::-1], lambda p: None)]
    assert got == [b"a0", b"b1", b"a2", b"b2", b"b3", b"a4", b"a4", b"b5"]


def test_parts_of_one_family_are_read_one_after_another_in_day_and_part_order(tmp_path):
    records = md_records(400)
    files = write_journal(tmp_path / "j", records, rotate_bytes=8192)
    assert len(files) > 3
    got = [r for _, r in merged_records(list(reversed(files)), lambda p: None)]
    assert got == [Record(*r) for r in records]


# ---- the command ------------------------------------------------------------------------------

def replay_cmd(*args):
    return [HEDGEPIPE, "replay", *map(str, args)]


def replay_to_pipe(tmp_path, *args, timeout=60):
    result = run_tool(["replay", *map(str, args), "--out", "-"], cwd=tmp_path, timeout=timeout)
    return result, frames_of(result.stdout), result.stderr.decode()


def test_replay_to_a_pipe_sends_every_frame_byte_for_byte_merged_by_time(tmp_path):
    md = md_records(300)
    hb = [(T0 + i * SEC // 3, b"hb.feed-deribit", msgspec.msgpack.encode({"n": i})) for i in range(100)]
    files = write_journal(tmp_path / "j", md + hb)
    result, frames, err = replay_to_pipe(tmp_path, tmp_path / "j", "--as-fast-as-possible")
    assert result.returncode == 0, err
    # ties go to the file named first: hb.0001 sorts before md.0001
    want = [(topic, payload) for _, topic, payload in sorted(hb + md, key=lambda r: r[0])]
    assert frames == want
    assert "400 frames sent of 400 read from 2 files; 0 problems" in err
    assert "record time 2026-11-23T05:00:00.000Z .. 2026-11-23T05:00:33.000Z (33.0s)" in err
    for path, n in zip(files, (100, 300)):
        assert re.search(rf"{re.escape(str(path))}\s+{n} sent\s+{n} read", err)


def test_paced_replay_at_high_speed_sends_everything_in_order(tmp_path):
    records = md_records(50, step_ns=SEC // 100)  # 0.5 s of records at speed 50: 10 ms
    write_journal(tmp_path / "j", records)
    result, frames, err = replay_to_pipe(tmp_path, tmp_path / "j", "--speed", "50")
    assert result.returncode == 0, err
    assert frames == [(t, p) for _, t, p in records]


def test_topic_and_time_window_select_what_is_sent(tmp_path):
    records = md_records(40)  # one every 0.1 s: book, ticker, trade, index in turn
    write_journal(tmp_path / "j", records)
    result, frames, err = replay_to_pipe(tmp_path, tmp_path / "j", "--as-fast-as-possible",
                                         "--topic", "md.book", "--topic", "md.index",
                                         "--from", "2026-11-23T05:00:01Z", "--to", "1795410002.5")
    assert result.returncode == 0, err
    want = [(t, p) for ts, t, p in records
            if T0 + SEC <= ts < T0 + 25 * SEC // 10 and t.startswith((b"md.book", b"md.index"))]
    assert frames == want and len(want) == 8
    assert "8 frames sent of 40 read" in err


# Determinism: the daemons a replayed day goes through, each reading --in - and writing
# --out -, with the payload fields it stamps from its own wall clock (those differ from run to
# run by design, so they are left out of the comparison). Adding a daemon is one line here.
Chain = list[tuple[list[str], tuple[str, ...]]]
CHAINS: dict[str, Chain] = {
    "relay": [(["bus-relay"], ())],
    # etl-filter's one wall-clock field is its own receive stamp; it must not read Redis state
    # left by another test, so priming is off (its rules then depend on the stream alone).
    "etl-filter": [(["etl-filter", "--set", "prime_from_redis=false"], ("ts_clean",)),
                   (["bus-relay"], ())],
}


def run_chain(journal, config, tmp_path, run: str, chain: Chain) -> list[tuple[bytes, bytes]]:
    """replay J --as-fast-as-possible --out - | daemon --in - --out - | ...: the last one's frames."""
    logs = []
    first = subprocess.Popen(replay_cmd(journal, "--as-fast-as-possible", "--out", "-"), cwd=tmp_path,
                             env=clean_env(), stdout=subprocess.PIPE,
                             stderr=open(tmp_path / f"{run}-replay.log", "wb"))
    procs = [first]
    for (daemon, *args), _ in chain:
        log = tmp_path / f"{run}-{daemon}.log"
        logs.append(log)
        procs.append(subprocess.Popen([str(VENV_BIN / daemon), *args, "--config", config, "--in", "-",
                                       "--out", "-"], cwd=tmp_path, env=clean_env(),
                                      stdin=procs[-1].stdout, stdout=subprocess.PIPE,
                                      stderr=open(log, "wb")))
        procs[-2].stdout.close()  # only the next daemon holds the pipe now
    out, _ = procs[-1].communicate(timeout=60)
    codes = [p.wait(30) for p in procs]
    assert codes == [0] * len(procs), [(p.args[0], c, log.read_text()[-2000:]) for p, c, log in
                                       zip(procs[1:], codes[1:], logs)]
    return frames_of(out)


def comparable(frames, chain: Chain):
    """The data frames: without each daemon's own hb.<name> (uptime, pid), and byte for byte
    unless a daemon in the chain stamps wall-clock fields, which are then dropped."""
    wall_clock = {f for _, fields in chain for f in fields}
    data = [(t, p) for t, p in frames if not t.startswith(b"hb.")]
    if not wall_clock:
        return data
    return [(t, {k: v for k, v in msgspec.msgpack.decode(p).items() if k not in wall_clock})
            for t, p in data]


@pytest.mark.parametrize("name", CHAINS)
def test_replaying_a_day_twice_through_the_same_daemons_gives_the_same_frames(name, tmp_path, short_tmp,
                                                                              shared_data):
    chain = CHAINS[name]
    records = recorded_md(shared_data) + md_records(400, start=T0)
    write_journal(tmp_path / "j", records)
    config = short_tmp / "hedgepipe.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\nheartbeat_interval_s = 0.2\n')
    first = comparable(run_chain(tmp_path / "j", str(config), tmp_path, "first", chain), chain)
    second = comparable(run_chain(tmp_path / "j", str(config), tmp_path, "second", chain), chain)
    assert len(records) == 545 and len(first) > 0
    assert first == second
    if name == "relay":  # a relay changes nothing: out is what was journaled
        assert first == [(t, p) for _, t, p in sorted(records, key=lambda r: r[0])]
    else:  # the filter passed data through, not just instruments
        assert any(t.startswith(b"clean.book.") for t, _ in first)


def test_a_reader_that_closes_the_pipe_ends_replay_quietly_with_exit_0(tmp_path):
    write_journal(tmp_path / "j", md_records(20_000, step_ns=SEC // 1000))
    proc = subprocess.Popen(replay_cmd(tmp_path / "j", "--as-fast-as-possible", "--out", "-"),
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read(1000)  # like `| head -c 1000`
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert len(first) == 1000
    assert proc.returncode == 0, err.decode()
    text = err.decode()
    assert "ended early: the reader closed the pipe" in text
    assert "Traceback" not in text and "BrokenPipe" not in text


def test_ctrl_c_ends_replay_on_a_frame_boundary_with_a_summary(tmp_path):
    records = [(T0 + i * 3600 * SEC, b"md.book.deribit.X", b"p%d" % i) for i in range(3)]  # hours apart
    write_journal(tmp_path / "j", records)
    proc = subprocess.Popen(replay_cmd(tmp_path / "j", "--out", "-"), cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = FrameReader(1 << 20)
    frames = []
    while not frames:  # the first goes at once; the next is due in an hour
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "no first frame"
        frames += reader.feed(os.read(proc.stdout.fileno(), 65536))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    frames += reader.feed(out)
    assert proc.returncode == 130
    assert frames == [(b"md.book.deribit.X", b"p0")] and reader.pending == 0
    assert "ended early: stopped by SIGINT" in err.decode()
    assert "1 frames sent of 2 read" in err.decode()


class Subscriber:
    def __init__(self, endpoint):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)  # before replay binds: zmq connects when it can

    def receive(self, n, timeout_s=30):
        frames = []
        deadline = time.monotonic() + timeout_s
        while len(frames) < n:
            assert self.sock.poll(int(max(0, deadline - time.monotonic()) * 1000)), f"{len(frames)} of {n}"
            frames.append(tuple(self.sock.recv_multipart()))
        return frames

    def close(self):
        self.sock.close()
        self.ctx.term()


def test_replay_to_a_socket_waits_for_its_subscriber_then_sends_everything(tmp_path):
    records = md_records(5000, step_ns=SEC // 1000)
    write_journal(tmp_path / "j", records)
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    sub = Subscriber(endpoint)
    try:
        proc = subprocess.Popen(replay_cmd(tmp_path / "j", "--as-fast-as-possible", "--out", endpoint),
                                cwd=tmp_path, env=clean_env(), stderr=subprocess.PIPE)
        frames = sub.receive(len(records))
        _, err = proc.communicate(timeout=30)
    finally:
        sub.close()
    assert proc.returncode == 0, err.decode()
    assert frames == [(t, p) for _, t, p in records]
    assert f"waiting for 1 subscribers on {endpoint}" in err.decode()


def test_no_subscriber_by_the_timeout_is_an_error_and_nothing_is_sent(tmp_path):
    write_journal(tmp_path / "j", md_records(10))
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    result = run_tool(["replay", str(tmp_path / "j"), "--out", endpoint, "--wait-timeout", "0.2"],
                      cwd=tmp_path)
    assert result.returncode == EX_UNAVAILABLE
    assert "0 of 1 subscribers connected" in result.stderr.decode()
    assert "frames sent" not in result.stderr.decode()


# ---- bad input ----------------------------------------------------------------------------------

def plain_journal(tmp_path, records, name="day.hpj"):
    [gz] = write_journal(tmp_path / "w", records)
    path = tmp_path / name
    path.write_bytes(gzip.decompress(gz.read_bytes()))
    return path


def test_a_journal_that_ends_mid_frame_replays_every_whole_record_and_reports_the_torn_tail(tmp_path):
    records = md_records(30)
    path = plain_journal(tmp_path, records)
    size = path.stat().st_size
    os.truncate(path, size - 7)
    result, frames, err = replay_to_pipe(tmp_path, path, "--as-fast-as-possible")
    assert result.returncode == 0, err
    assert frames == [(t, p) for _, t, p in records[:-1]]
    last_len = 20 + len(records[-1][1]) + len(records[-1][2])
    assert f"{path}: torn_tail at offset {size - last_len}, {last_len - 7} bytes skipped" in err
    assert "29 frames sent of 29 read from 1 files; 1 problems" in err


def test_a_corrupt_record_in_the_middle_is_skipped_and_reported_and_the_rest_replayed(tmp_path):
    records = md_records(30)
    path = plain_journal(tmp_path, records)
    data = bytearray(path.read_bytes())
    lengths = [20 + len(t) + len(p) for _, t, p in records]
    at = len(MAGIC) + sum(lengths[:12])
    data[at + 25:at + 29] = b"\xff\xfe\xfd\xfc"  # inside record 12
    path.write_bytes(bytes(data))
    result, frames, err = replay_to_pipe(tmp_path, path, "--as-fast-as-possible")
    assert result.returncode == 0, err
    assert frames == [(t, p) for _, t, p in records[:12] + records[13:]]
    assert f"{path}: corrupt at offset {at}, {lengths[12]} bytes skipped" in err


def test_a_gzip_journal_whose_stream_is_cut_replays_what_precedes_the_cut(tmp_path):
    records = md_records(3000)
    [gz] = write_journal(tmp_path / "j", records)
    data = gz.read_bytes()
    cut = tmp_path / "cut.hpj.gz"
    cut.write_bytes(data[:len(data) // 2])
    result, frames, err = replay_to_pipe(tmp_path, cut, "--as-fast-as-possible")
    assert result.returncode == 0, err
    assert 0 < len(frames) < len(records)
    assert frames == [(t, p) for _, t, p in records[:len(frames)]]
    assert f"{cut}: torn_tail at offset" in err and "compressed stream ends early" in err


@pytest.mark.parametrize("content", [
    b"2026-11-23 05:00:00 md.book BTC 0.05 0.051\n",
    msgspec.msgpack.encode(["md.book.deribit.X", b"payload"]),
    b"",
    gzip.compress(b"a gzip of something else entirely\n"),
], ids=["text", "msgpack", "empty", "gzip-of-text"])
def test_a_file_that_is_not_a_journal_exits_65_naming_it_before_anything_is_sent(tmp_path, content):
    write_journal(tmp_path / "j", md_records(10))
    bad = tmp_path / "bad.hpj.gz"
    bad.write_bytes(content)
    result = run_tool(["replay", str(tmp_path / "j"), str(bad), "--as-fast-as-possible", "--out", "-"],
                      cwd=tmp_path)
    assert result.returncode == EX_DATAERR
    assert result.stdout == b""  # the good journal named first was not sent either
    err = result.stderr.decode()
    assert str(bad) in err and "nothing was read" in err


def test_an_empty_journal_left_in_a_directory_by_a_crash_is_reported_and_skipped(tmp_path):
    records = md_records(10)
    [gz] = write_journal(tmp_path / "j", records)
    left = gz.with_name("md.0002.hpj")
    left.write_bytes(MAGIC[:3])  # the writer created it and died before its header was out
    result, frames, err = replay_to_pipe(tmp_path, tmp_path / "j", "--as-fast-as-possible")
    assert result.returncode == 0, err
    assert frames == [(t, p) for _, t, p in records]
    assert f"{left}: torn_header at offset 0" in err
    named = run_tool(["replay", str(left), "--out", "-"], cwd=tmp_path)  # named: it is not a journal
    assert named.returncode == EX_DATAERR


def test_a_directory_without_journals_is_a_clear_error(tmp_path):
    (tmp_path / "day").mkdir()
    (tmp_path / "day" / "README").write_text("nothing here")
    result = run_tool(["replay", str(tmp_path / "day"), "--out", "-"], cwd=tmp_path)
    assert result.returncode == EX_NOINPUT
    assert f"{tmp_path / 'day'}: no journal files (*.hpj, *.hpj.gz)" in result.stderr.decode()
    assert result.stdout == b""


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-11-23T06:00:00", "--to", "2026-11-23T05:00:00"], "is not before --to"),
    (["--from", "1795410000", "--to", "1795410000"], "is not before --to"),
    (["--from", "yesterday"], "want an ISO 8601 time"),
    (["--speed", "2", "--as-fast-as-possible"], "exclude each other"),
    (["--speed", "0"], "--speed"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    write_journal(tmp_path / "j", md_records(4))
    result = run_tool(["replay", str(tmp_path / "j"), "--out", "-", *args], cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert result.stdout == b""


def test_binary_frames_are_not_written_to_a_terminal(tmp_path):
    write_journal(tmp_path / "j", md_records(4))
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(replay_cmd(tmp_path / "j", "--out", "-"), cwd=tmp_path, env=clean_env(),
                                stdout=terminal, stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert "pipe stdout into a daemon" in result.stderr.decode()
