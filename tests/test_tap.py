"""zmq-tap as a user runs it: a real subprocess reading real pipes and real ZeroMQ sockets."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import zmq

from hedgepipe.tools.tap import parse_since

from ._tap_helpers import (BOOK_TOPIC, T0, TICKER_TOPIC, Publisher, book, heartbeat, json_lines,
                          pipe, read_until, run_tap, start_tap, tap_env, ticker, untyped)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.term()


# ---- pipe mode ------------------------------------------------------------------------------

def test_json_shows_every_frame_with_its_fields(tmp_path):
    stream = pipe(book(1), ticker(1), heartbeat(1), book(2))
    result = run_tap(["-", "--json"], stream, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json_lines(result.stdout)
    assert [(o["topic"], o["msg"]["seq"]) for o in out] == [
        (BOOK_TOPIC, 1), (TICKER_TOPIC, 1), ("hb.feed-deribit", 1), (BOOK_TOPIC, 2)]
    first_book, tick, hb = out[0]["msg"], out[1]["msg"], out[2]["msg"]
    assert first_book["bids"] == [[0.0125, 10.0], [0.012, 3.5]]
    assert first_book["asks"] == [[0.013, 7.0]]
    assert (first_book["src"], first_book["ts_event"], first_book["change_id"]) == ("feed-deribit", T0, 1001)
    assert (tick["bid"], tick["ask"], tick["mark_price"]) == (100000.5, 100001.0, 100000.75)
    assert hb["counters"] == {"in_msgs": 7, "gaps": 0} and hb["state"] == "running"


def test_text_lines_are_aligned_and_compact(tmp_path):
    result = run_tap(["-"], pipe(book(1), ticker(7), heartbeat(3)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("05:00:00.000000 " + BOOK_TOPIC)
    assert "bid 0.0125x10 0.012x3.5 | ask 0.013x7 cid=1001" in lines[0]
    assert "bid 100000.5x2500 ask 100001 mark 100000.75" in lines[1]
    assert "running up 12.5s in_msgs=7" in lines[2]
    # The src#seq column starts at the same place whatever the topic's length.
    columns = {line.index(tag) for line, tag in zip(lines, ("feed-deribit#1", "feed-deribit#7",
                                                            "feed-deribit#3"))}
    assert len(columns) == 1


def test_count_stops_after_n_frames_without_waiting_for_eof(tmp_path):
    tap = start_tap(["-", "--json", "--count", "2"], cwd=tmp_path, stdin=subprocess.PIPE)
    tap.stdin.write(pipe(book(1), book(2), book(3), book(4)))
    tap.stdin.flush()  # stdin stays open: only --count can end the tap
    try:
        assert tap.wait(timeout=5) == 0
        assert [o["msg"]["seq"] for o in json_lines(tap.stdout.read())] == [1, 2]
    finally:
        tap.stdin.close()
        tap.kill()
        tap.wait()


def test_bad_frames_are_shown_and_the_good_ones_around_them_still_arrive(tmp_path):
    stream = pipe(
        book(1),
        b"\x01\x02 this is not a frame \xff",                          # garbage between frames
        (BOOK_TOPIC, ticker(2)[1]),                                    # wrong schema for the topic
        (BOOK_TOPIC, book(0)[1]),                                      # envelope without a seq
        untyped("store.write.journal", {"src": "store-writer", "seq": 9, "rows": 3}),
        ("store.write.journal", b"\xc1\xc1"),                          # unknown and not msgpack
        ("store.write.deep", b"\x91" * 5000 + b"\x01"),                # nested past any limit
        book(2),
        pipe(book(3))[:-5],                                            # stream cut inside a frame
    )
    result = run_tap(["-", "--json"], stream, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json_lines(result.stdout)
    assert [o.get("error") or o["msg"]["seq"] for o in out] == [
        1, "decode_error", "decode_error", "envelope_error", 9, "unknown_topic", "unknown_topic", 2,
        "truncated"]
    garbage, schema, envelope, store, not_msgpack, too_deep, _, truncated = out[1:]
    assert garbage == {"topic": None, "error": "decode_error", "hex": None,
                       "detail": "bytes that are not a [topic, payload] frame"}
    assert schema["topic"] == BOOK_TOPIC and "bid" in schema["detail"]
    assert schema["hex"].startswith(ticker(2)[1][:8].hex())
    assert "seq=0" in envelope["detail"]
    assert store == {"topic": "store.write.journal", "unknown_topic": True,
                     "msg": {"src": "store-writer", "seq": 9, "rows": 3}}
    assert not_msgpack["hex"] == "c1c1"
    assert "nested too deeply" in too_deep["detail"]
    assert "ended inside a frame" in truncated["detail"]

    text = run_tap(["-"], stream, cwd=tmp_path)
    lines = text.stdout.decode().splitlines()
    assert text.returncode == 0 and len(lines) == 9
    assert lines[2].startswith(f"!! decode_error {BOOK_TOPIC}: ") and lines[2].endswith("...")
    assert "store-writer#9" in lines[4] and "[unknown_topic] rows=3" in lines[4]
    assert lines[8].startswith("!! truncated (stream): stream ended inside a frame")


def test_oversized_frames_are_shown_as_such(tmp_path):
    big = book(2, topic="md.book.deribit.BIG")[1] + b"\0" * 300
    env = tap_env(HEDGEPIPE_RUNTIME__MAX_FRAME_BYTES="200")
    result = run_tap(["-", "--json"], pipe(book(1), ("md.book.deribit.BIG", big), book(3)),
                     cwd=tmp_path, env=env)
    out = json_lines(result.stdout)
    assert [o.get("error") or o["msg"]["seq"] for o in out] == [1, "oversized", 3]
    assert "max_frame_bytes 200" in out[1]["detail"]


def test_topic_filter(tmp_path):
    stream = pipe(book(1), ticker(1), heartbeat(1), book(2, topic="md.book.deribit.ETH-PERPETUAL"))
    result = run_tap(["-", "--json", "--topic", "md.book", "--topic", "hb."], stream, cwd=tmp_path)
    assert [o["topic"] for o in json_lines(result.stdout)] == [
        BOOK_TOPIC, "hb.feed-deribit", "md.book.deribit.ETH-PERPETUAL"]


def test_since_keeps_frames_at_or_after_the_time(tmp_path):
    stream = pipe(book(1, ts=T0 - 1), book(2, ts=T0), book(3, ts=T0 + 10**9))
    result = run_tap(["-", "--json", "--since", "2026-11-23T05:00:00Z"], stream, cwd=tmp_path)
    assert [o["msg"]["seq"] for o in json_lines(result.stdout)] == [2, 3]

    now = time.time_ns()
    stream = pipe(book(1, ts=now - 2 * 3600 * 10**9), book(2, ts=now - 60 * 10**9))
    result = run_tap(["-", "--json", "--since", "1h"], stream, cwd=tmp_path)
    assert [o["msg"]["seq"] for o in json_lines(result.stdout)] == [2]


def test_parse_since():
    now = T0
    assert parse_since("2026-11-23T05:00:00Z", now) == T0
    assert parse_since("2026-11-23T06:00:00.5+01:00", now) == T0 + 500_000_000
    assert parse_since("2026-11-23T05:00:00", now) == T0  # no zone: UTC
    assert parse_since("30s", now) == T0 - 30 * 10**9
    assert parse_since("1.5h", now) == T0 - 5400 * 10**9
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_since("yesterday", now)


def test_bad_since_is_a_usage_error(tmp_path):
    result = run_tap(["-", "--since", "yesterday"], cwd=tmp_path)
    assert result.returncode == 2 and b"--since" in result.stderr


# ---- stats ----------------------------------------------------------------------------------

def test_stats_counts_gaps_resets_and_errors(tmp_path):
    stream = pipe(book(1), book(2), book(5),                     # seq 3 and 4 never came: 2 gaps
                  book(1, topic="md.book.deribit.ETH-PERPETUAL"),  # its own seq: no gap
                  ticker(1), ticker(2), ticker(1),               # back to 1: a publisher restart
                  heartbeat(1), b"garbage", (BOOK_TOPIC, b"\xc1"))
    result = run_tap(["-", "--stats", "--json", "--interval", "60"], stream, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [final] = [t for t in json_lines(result.stdout) if t["stats"] == "final"]
    rows = final["rows"]
    assert set(rows) == {"md.book", "md.ticker", "hb.feed-deribit", "(stream)"}
    assert {k: rows["md.book"][k] for k in ("total", "gaps", "resets", "errors")} == \
        {"total": 4, "gaps": 2, "resets": 0, "errors": 1}
    assert (rows["md.ticker"]["total"], rows["md.ticker"]["resets"]) == (3, 1)
    assert rows["(stream)"]["errors"] == 1
    assert rows["md.book"]["lag_max_us"] >= rows["md.book"]["lag_p50_us"] is not None
    assert rows["(stream)"]["lag_p50_us"] is None  # no frames there, so no lag either

    by_topic = run_tap(["-", "--stats", "--by-topic", "--json"], stream, cwd=tmp_path)
    rows = json_lines(by_topic.stdout)[-1]["rows"]
    assert rows[BOOK_TOPIC]["gaps"] == 2 and rows["md.book.deribit.ETH-PERPETUAL"]["total"] == 1

    text = run_tap(["-", "--stats"], stream, cwd=tmp_path).stdout.decode()
    assert "final stats" in text
    header = next(line for line in text.splitlines() if line.startswith("prefix"))
    assert header.split() == ["prefix", "msgs/s", "total", "gaps", "resets", "errors",
                              "lag_p50_us", "lag_max_us"]


# ---- socket mode ----------------------------------------------------------------------------

def test_tcp_subscriber_with_topic_and_count(ctx, tmp_path):
    pub = Publisher(ctx, "tcp://127.0.0.1:*")
    tap = start_tap([pub.endpoint, "--json", "--count", "2", "--topic", "md.book"], cwd=tmp_path)
    try:
        pub.wait_subscribed("md.book")
        pub.send(*ticker(1))                       # not subscribed: never reaches the tap
        pub.send_one_part(b"md.book.broken")       # one part: shown as an error
        for seq in (1, 2, 3):
            pub.send(*book(seq))
        out, err = tap.communicate(timeout=5)
        assert tap.returncode == 0, err
        broken, *frames = json_lines(out)
        assert broken == {"topic": None, "error": "bad_frame", "hex": None,
                          "detail": "one-part message (14 bytes)"}
        assert [(o["topic"], o["msg"]["seq"]) for o in frames] == [(BOOK_TOPIC, 1), (BOOK_TOPIC, 2)]
    finally:
        tap.kill()
        tap.communicate()
        pub.close()


def test_named_and_default_endpoints_come_from_the_config(ctx, short_tmp, tmp_path):
    tcp = Publisher(ctx, "tcp://127.0.0.1:*")
    ipc = Publisher(ctx, f"ipc://{short_tmp}/feed.sock")
    config = tmp_path / "hedgepipe.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\n\n'
                      f'[endpoints]\nfeed-deribit = "{ipc.endpoint}"\nbus-relay = "{tcp.endpoint}"\n')
    taps = []
    try:
        taps.append(start_tap(["--config", str(config), "feed-deribit", "--json", "--count", "1"],
                              cwd=tmp_path))
        ipc.wait_subscribed()
        ipc.send(*book(1))
        out, err = taps[-1].communicate(timeout=5)
        assert taps[-1].returncode == 0, err
        assert [o["msg"]["seq"] for o in json_lines(out)] == [1]

        # No ENDPOINT: every one in [endpoints].
        taps.append(start_tap(["--config", str(config), "--json", "--count", "2"], cwd=tmp_path))
        tcp.wait_subscribed()
        ipc.wait_subscribed()
        tcp.send(*heartbeat(1, name="bus-relay"))
        ipc.send(*book(2))
        out, err = taps[-1].communicate(timeout=5)
        assert taps[-1].returncode == 0, err
        assert sorted(o["topic"] for o in json_lines(out)) == ["hb.bus-relay", BOOK_TOPIC]
    finally:
        for tap in taps:
            tap.kill()
            tap.communicate()
        tcp.close()
        ipc.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_missing_ipc_is_waited_for_and_a_signal_prints_the_final_stats(tmp_path, sig):
    tap = start_tap(["ipc:///nonexistent-dir/x.sock", "--stats", "--json", "--interval", "0.05"],
                    cwd=tmp_path)
    try:
        err = read_until(tap.stderr, "ipc:///nonexistent-dir/x.sock")
        assert "nothing is listening there yet" in err and "Traceback" not in err
        first = read_until(tap.stdout, '"stats":"interval"')  # still there, still reporting
        tap.send_signal(sig)
        rest, more_err = tap.communicate(timeout=5)
        assert tap.returncode == 0, more_err
        tables = json_lines(first.encode() + rest)
        assert {t["stats"] for t in tables[:-1]} == {"interval"}
        assert tables[-1]["stats"] == "final" and tables[-1]["rows"] == {}
    finally:
        tap.kill()
        tap.communicate()


@pytest.mark.parametrize("endpoint, message", [
    ("foo://bar", b"want ipc://PATH, tcp://HOST:PORT"),
    ("no-such-daemon", b"neither a name in [endpoints]"),
])
def test_bad_endpoint_exits_78_with_a_clear_message(tmp_path, endpoint, message):
    result = run_tap([endpoint], cwd=tmp_path)
    assert result.returncode == 78
    assert message in result.stderr and b"Traceback" not in result.stderr


def test_reader_closing_stdout_ends_the_tap_quietly(tmp_path):
    frames = tmp_path / "frames.bin"
    # Far more text than a pipe buffer holds, so the tap must still be writing when head exits.
    frames.write_bytes(pipe(*(book(seq) for seq in range(1, 5001))))
    with open(frames, "rb") as stdin:
        tap = start_tap(["-"], cwd=tmp_path, stdin=stdin)
        head = subprocess.Popen(["head", "-3"], stdin=tap.stdout, stdout=subprocess.PIPE)
        tap.stdout.close()  # head owns the read end now
        shown, _ = head.communicate(timeout=5)
        _, err = tap.communicate(timeout=5)
    assert len(shown.splitlines()) == 3
    assert tap.returncode == 0
    assert err == b""


def test_help_describes_every_option(tmp_path):
    result = run_tap(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--topic PREFIX", "--json", "--count N", "--since WHEN", "--stats", "--by-topic",
                   "--interval SECONDS", "--config FILE", "--log-level", "--log-json", "[ENDPOINT]..."):
        assert option.encode() in result.stdout, option
