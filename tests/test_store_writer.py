"""store-writer's Service against a real Redis: what is stored where, batching, bounds, bad input."""

from __future__ import annotations

import json
import logging
import os
import re
import signal

import msgspec
import pytest
import redis

from hedgepipe import messages as m
from hedgepipe.clock import FakeClock
from hedgepipe.config import load_settings
from hedgepipe.daemons.store_writer import StoreWriterConfig, StoreWriterService
from hedgepipe.errors import ConfigError, StorageError
from hedgepipe.journal import journal_files, read_journal
from hedgepipe.runtime import run_handler
from hedgepipe.state import load_state
from hedgepipe.store.embedded import EmbeddedRedis, redis_executable

from . import store_frames as f
from .conftest import REPO, wait_until


def start(tmp_path, redis_url, clock=None, **cfg) -> StoreWriterService:
    """A Service as the runtime starts it: config, run_dir, then sources() does the I/O."""
    cfg.setdefault("journal_dir", str(tmp_path / "journal"))
    svc = StoreWriterService(StoreWriterConfig(redis_url=redis_url, **cfg), clock or FakeClock())
    svc.run_dir = str(tmp_path / "run")
    svc.sources()
    return svc


def journal_records(root) -> list:
    return [rec for path in journal_files([root]) for rec in read_journal(path)]


def client(url) -> redis.Redis:
    return redis.Redis.from_url(url)


def stored_everywhere(r: redis.Redis) -> dict[bytes, bytes]:
    """Every hp:last:* field: the whole live state in Redis."""
    out = {}
    for key in r.keys(b"hp:last:*"):
        out.update(r.hgetall(key))
    return out


def test_every_kind_is_stored_as_received_with_its_latest_value(tmp_path, redis_url):
    frames = f.mix(450)
    svc = start(tmp_path, redis_url)
    svc.flush(wait_for_redis=True)  # the first flush (rewrites the empty state): the timer's
    assert run_handler(svc, frames[:200]) == []  # it publishes nothing but its heartbeat
    svc.flush()
    assert run_handler(svc, frames[200:]) == []
    svc.flush(wait_for_redis=True)
    r = client(redis_url)
    expected = f.last_per_topic(frames)
    kinds = {b"md.book", b"md.ticker", b"clean.book", b"clean.ticker", b"md.trade", b"md.index", b"hb",
             b"md.instrument", b"position.deribit"}
    stored = {}
    for kind in kinds:
        stored.update(r.hgetall(b"hp:last:" + kind))
    assert stored == expected
    assert r.hget(b"hp:last:position.deribit", b"position.deribit.BTC-PERPETUAL") == expected[
        b"position.deribit.BTC-PERPETUAL"]  # a kind nobody declared is stored too
    assert sum(r.xlen(b"hp:stream:" + kind) for kind in kinds) == len(frames)
    entry = r.xrevrange(b"hp:stream:md.index", count=1)[0][1]
    assert (entry[b"t"], entry[b"p"]) == [fr for fr in frames if fr[0].startswith(b"md.index")][-1]
    svc.on_stop()
    got = sorted((rec.topic, rec.payload) for rec in journal_records(tmp_path / "journal"))
    assert got == sorted(frames)
    assert svc.stats["redis_up"] == 1 and svc.stats["keys"] == len(expected)


def test_load_state_gives_a_late_daemon_the_current_values(tmp_path, redis_url):
    frames = f.mix(90) + [(b"position.deribit.BAD", b"\xc1not msgpack")]
    svc = start(tmp_path, redis_url)
    run_handler(svc, frames)
    svc.on_stop()
    problems = []
    state = load_state(["md.book", "md.index", "hb", "position.deribit"], url=redis_url,
                       on_problem=lambda topic, detail: problems.append(topic))
    last = f.last_per_topic(frames)
    book_topic = next(t for t, _ in frames if t.startswith(b"md.book.")).decode()
    assert isinstance(state[book_topic], m.Book)
    assert state[book_topic] == m.decode(book_topic, last[book_topic.encode()])
    assert state["md.index.composite.btc_usd"].price == m.decode(
        "md.index.composite.btc_usd", last[b"md.index.composite.btc_usd"]).price
    assert isinstance(state["hb.feed-deribit"], m.Heartbeat)
    assert state["position.deribit.BTC-PERPETUAL"]["size"] > 0  # an undeclared kind: plain data
    assert problems == ["position.deribit.BAD"]  # undecodable: left out and reported
    assert "md.ticker.deribit.BTC-PERPETUAL" not in state  # only the kinds asked for


def test_frames_are_batched_and_only_the_last_value_per_field_is_written(tmp_path, redis_url):
    svc = start(tmp_path, redis_url, batch_max=100)
    r = client(redis_url)
    batches0 = svc.stats["redis_batches"]
    frames = [f.book(seq) for seq in range(1, 251)]  # one topic, 250 values
    run_handler(svc, frames)
    # Two batches went out when 100 and 200 frames were waiting; 50 wait for the timer.
    wait_until(lambda: r.xlen(b"hp:stream:md.book") == 200, what="two batches in Redis")
    assert r.hget(b"hp:last:md.book", frames[0][0]) == frames[199][1]
    svc.flush(wait_for_redis=True)
    assert r.xlen(b"hp:stream:md.book") == 250
    assert r.hget(b"hp:last:md.book", frames[0][0]) == frames[-1][1]
    assert svc.stats["redis_batches"] - batches0 == 3
    # each batch: its XADDs and one HSET of the single field (not one per frame)
    assert svc.stats["redis_writes"] == 250 + 3


def test_streams_are_capped(tmp_path, redis_url):
    svc = start(tmp_path, redis_url, stream_maxlen=100, batch_max=50)
    frames = [f.ticker(seq) for seq in range(1, 2001)]
    run_handler(svc, frames)
    svc.flush(wait_for_redis=True)
    r = client(redis_url)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default): near the cap, never far.
    assert 100 <= r.xlen(b"hp:stream:md.ticker") < 300
    newest = r.xrevrange(b"hp:stream:md.ticker", count=1)[0][1]
    assert newest[b"p"] == frames[-1][1]


def test_books_deeper_than_book_levels_are_cut_in_redis_and_kept_whole_in_the_journal(tmp_path, redis_url):
    svc = start(tmp_path, redis_url, book_levels=10)
    deep = f.book(1, f.INSTRUMENTS[0], depth=15)
    shallow = f.book(2, f.INSTRUMENTS[1], depth=10)
    run_handler(svc, [deep, shallow])
    svc.on_stop()
    r = client(redis_url)
    stored = m.decode(deep[0].decode(), r.hget(b"hp:last:md.book", deep[0]))
    original = m.decode(deep[0].decode(), deep[1])
    assert (stored.bids, stored.asks) == (original.bids[:10], original.asks[:10])
    assert (stored.src, stored.seq, stored.ts_recv) == (original.src, original.seq, original.ts_recv)
    assert r.xrevrange(b"hp:stream:md.book", count=2)[-1][1][b"p"] == r.hget(b"hp:last:md.book", deep[0])
    assert r.hget(b"hp:last:md.book", shallow[0]) == shallow[1]  # not deeper: stored byte for byte
    assert svc.stats["books_trimmed"] == 1
    assert [(rec.topic, rec.payload) for rec in journal_records(tmp_path / "journal")] == [deep, shallow]


def test_clean_books_are_cut_too(tmp_path, redis_url):
    svc = start(tmp_path, redis_url, book_levels=4)
    deep = f.book(1, f.INSTRUMENTS[2], depth=6, stage="clean")
    run_handler(svc, [deep])
    svc.on_stop()
    stored = m.decode(deep[0].decode(), client(redis_url).hget(b"hp:last:clean.book", deep[0]))
    assert (len(stored.bids), len(stored.asks), svc.stats["books_trimmed"]) == (4, 4, 1)


# ---- bad input ---------------------------------------------------------------------------------

def test_a_frame_of_an_unknown_type_is_journaled_raw_and_stored(tmp_path, redis_url):
    weird = (b"alert.gremlins.x", b"\x00\xffnot even msgpack")
    svc = start(tmp_path, redis_url)
    run_handler(svc, [weird, f.book(1)])
    svc.on_stop()
    r = client(redis_url)
    assert r.hget(b"hp:last:alert.gremlins", weird[0]) == weird[1]
    assert r.xrange(b"hp:stream:alert.gremlins")[0][1] == {b"t": weird[0], b"p": weird[1]}
    assert (weird[0], weird[1]) in [(rec.topic, rec.payload) for rec in journal_records(tmp_path / "journal")]


def test_a_book_that_does_not_decode_is_stored_as_received_and_counted(tmp_path, redis_url, caplog):
    topic = f.book(1)[0]
    svc = start(tmp_path, redis_url)
    run_handler(svc, [(topic, b"\x93garbage"), (topic, b"\x81\xa4bids\x05")])
    svc.on_stop()
    assert client(redis_url).hget(b"hp:last:md.book", topic) == b"\x81\xa4bids\x05"
    assert svc.stats["books_undecodable"] == 2
    assert sum("book not cut to its top levels" in rec.message for rec in caplog.records) == 1


def test_a_write_redis_refuses_is_counted_with_its_key_and_the_rest_is_written(tmp_path, redis_url, caplog):
    r = client(redis_url)
    r.set(b"hp:last:md.book", b"not a hash")  # HSET on it: WRONGTYPE
    svc = start(tmp_path, redis_url)
    frames = [f.book(1), f.ticker(2), f.book(3), f.index(4)]
    with caplog.at_level(logging.WARNING):
        run_handler(svc, frames)
        svc.flush(wait_for_redis=True)
        run_handler(svc, [f.book(5)])
        svc.flush(wait_for_redis=True)
    assert svc.stats["redis_command_errors"] == 2  # one HSET per batch refused
    assert r.hget(b"hp:last:md.ticker", frames[1][0]) == frames[1][1]
    assert r.hget(b"hp:last:md.index", frames[3][0]) == frames[3][1]
    assert r.xlen(b"hp:stream:md.book") == 3  # the book stream is another key: written
    refused = [rec for rec in caplog.records if "Redis refused a write" in rec.message]
    assert len(refused) == 1 and refused[0].key == "hp:last:md.book" and "WRONGTYPE" in refused[0].message
    assert svc.stats["redis_up"] == 1  # a refusal is not an outage
    svc.on_stop()


def test_a_frame_the_journal_refuses_still_reaches_redis_and_its_neighbours_lose_nothing(tmp_path, redis_url,
                                                                                          caplog):
    huge = b"alert.huge." + b"x" * 70_000  # over the journal's 65535-byte topic length
    frames = [f.book(1), (huge, b"\x01"), f.ticker(2), (huge, b"\x02"), f.index(3)]
    svc = start(tmp_path, redis_url)
    with caplog.at_level(logging.WARNING):
        run_handler(svc, frames)
        svc.on_stop()
    r = client(redis_url)
    assert r.hget(b"hp:last:alert.huge", huge) == b"\x02" and r.xlen(b"hp:stream:alert.huge") == 2
    assert stored_everywhere(r) == f.last_per_topic(frames)
    assert [(rec.topic, rec.payload) for rec in journal_records(tmp_path / "journal")] == [
        frames[0], frames[2], frames[4]]
    assert svc.stats["journal_refused"] == 2 and svc.stats["journal_append_errors"] == 0
    said = [rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()]
    assert len(said) == 1 and repr(huge[:80]) in said[0] and repr(huge[:81]) not in said[0]


def test_an_exception_from_the_journal_costs_redis_no_frame(tmp_path, redis_url, caplog):
    clock = FakeClock(start_ns=2**63)  # past the journal's int64 stamp: every append raises
    frames = f.mix(30)
    svc = start(tmp_path, redis_url, clock=clock)
    with caplog.at_level(logging.WARNING):
        assert run_handler(svc, frames) == []
        svc.on_stop()
    assert stored_everywhere(client(redis_url)) == f.last_per_topic(frames)
    assert sum(client(redis_url).xlen(k) for k in client(redis_url).keys(b"hp:stream:*")) == 30
    assert svc.stats["journal_append_errors"] == 30 and svc.stats["journal_records"] == 0
    said = [rec for rec in caplog.records if "the journal raised" in rec.getMessage()]
    assert len(said) == 1 and said[0].topic == frames[0][0][:80].decode()


def test_journal_dir_that_cannot_be_created_is_a_clear_storage_error(tmp_path, redis_url):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="journal directory .*a-file/journal is not writable") as err:
        start(tmp_path, redis_url, journal_dir=str(blocker / "journal"))
    assert err.value.exit_code == 73


def test_a_relative_journal_dir_or_a_password_in_redis_url_is_refused_when_settings_load(tmp_path):
    config = tmp_path / "hp.toml"
    config.write_text('[store-writer]\njournal_dir = "var/journal"\n')
    with pytest.raises(ConfigError, match="absolute path or one starting with {run_dir}"):
        load_settings("store-writer", StoreWriterConfig, config_path=str(config), environ={})
    config.write_text('[store-writer]\nredis_url = "redis://:hunter2@h:6379/0"\n')
    with pytest.raises(ConfigError, match="redis_url carries a password") as err:
        load_settings("store-writer", StoreWriterConfig, config_path=str(config), environ={})
    assert "hunter2" not in str(err.value)
    config.write_text('[store-writer]\njournal_dir = "{run_dir}/../journal"\nredis_url = "redis://h:1/0"\n')
    assert load_settings("store-writer", StoreWriterConfig, config_path=str(config),
                         environ={}).daemon.redis_url == "redis://h:1/0"


def test_the_clock_going_backwards_is_counted_and_nothing_is_lost(tmp_path, redis_url):
    clock = FakeClock()
    svc = start(tmp_path, redis_url, clock=clock)
    frames = f.mix(30)
    run_handler(svc, frames[:10])
    clock._ns -= 5 * 10**9  # the wall clock steps back 5 s (NTP); monotonic time does not
    run_handler(svc, frames[10:20])
    clock.advance(10)
    run_handler(svc, frames[20:])
    svc.on_stop()
    assert svc.stats["journal_clock_backwards"] == 10
    records = journal_records(tmp_path / "journal")
    assert sorted((rec.topic, rec.payload) for rec in records) == sorted(frames)
    stamps = {rec.payload: rec.ts_ns for rec in records}
    assert stamps[frames[10][1]] == stamps[frames[9][1]] - 5 * 10**9  # kept as read, for the audit
    assert frames[-1][0].startswith(b"clean.book.")
    assert client(redis_url).hget(b"hp:last:clean.book", frames[-1][0]) == frames[-1][1]


# ---- Redis away ------------------------------------------------------------------------------------

def test_redis_down_at_start_then_up_rebuilds_the_state_and_writes_the_backlog(tmp_path, short_tmp,
                                                                             monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)  # a server of our own, that we can start late
    clock = FakeClock()
    server = EmbeddedRedis(short_tmp / "r", save="")
    svc = start(tmp_path, server.url, clock=clock, backlog_max=100, batch_max=1000)
    assert svc.stats["redis_up"] == 0 and svc.stats["redis_errors"] == 1
    frames = [f.ticker(seq, f.INSTRUMENTS[seq % 3]) for seq in range(1, 251)]
    run_handler(svc, frames)
    svc.flush(wait_for_redis=True)
    assert svc.stats["stream_backlog_dropped"] == 150 and svc.stats["backlog"] == 100
    assert svc.stats["keys"] == 3
    server.start()
    try:
        svc.flush()  # within the backoff: no attempt yet
        assert svc.stats["redis_up"] == 0
        clock.advance(1.0)
        svc.flush(wait_for_redis=True)
        assert svc.stats["redis_up"] == 1 and svc.stats["backlog"] == 0
        r = client(server.url)
        assert r.hgetall(b"hp:last:md.ticker") == f.last_per_topic(frames)
        assert [e[1][b"p"] for e in r.xrange(b"hp:stream:md.ticker")] == [p for _, p in frames[150:]]
        svc.on_stop()
        assert len(journal_records(tmp_path / "journal")) == 250  # the journal has them all
    finally:
        server.stop()


def test_redis_dying_mid_pipeline_loses_no_live_value_and_no_stream_entry(tmp_path, short_tmp, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)  # a server of our own, that we can kill
    clock = FakeClock()
    server = EmbeddedRedis(short_tmp / "r", save="")
    server.start()
    svc = start(tmp_path, server.url, clock=clock)
    frames = f.mix(300)
    try:
        run_handler(svc, frames[:100])
        svc.flush(wait_for_redis=True)
        os.kill(server.pid, signal.SIGSTOP)  # frozen: the next pipeline is sent, never executed
        run_handler(svc, frames[100:200])
        svc.flush()
        assert svc.stats["redis_batches"] == 2 and svc.stats["backlog"] == 100  # in flight
        os.kill(server.pid, signal.SIGKILL)  # dies with the pipeline unread
        server.stop()
        run_handler(svc, frames[200:])
        svc.flush(wait_for_redis=True)
        assert svc.stats["redis_up"] == 0 and svc.stats["redis_errors"] >= 1
        assert svc.stats["backlog"] == 200  # the lost pipeline's entries are back in the backlog
        server.start()  # empty: no RDB was saved
        clock.advance(5)
        svc.flush(wait_for_redis=True)
        r = client(server.url)
        stored = {}
        for key in r.keys(b"hp:last:*"):
            stored.update(r.hgetall(key))
        assert stored == f.last_per_topic(frames)  # rebuilt, including values written before
        assert svc.stats["redis_reconnects"] == 1 and svc.stats["redis_rebuilds"] == 2
        streams = [(e[b"t"], e[b"p"]) for k in r.keys(b"hp:stream:*") for _id, e in r.xrange(k)]
        assert sorted(streams) == sorted(frames[100:])  # the pipeline that died was sent again
        assert svc.stats["backlog"] == 0 and svc.stats["stream_backlog_dropped"] == 0
        svc.on_stop()
    finally:
        server.stop()


def test_stopping_while_the_embedded_server_restarts_still_writes_the_last_values(short_tmp, monkeypatch, caplog,
                                                                                  request):
    monkeypatch.delenv("REDIS_URL", raising=False)  # the embedded server, which we kill
    svc = start(short_tmp, "", embedded_save="3600 1")  # it saves at stop: read back below
    frames = f.mix(200)
    request.addfinalizer(lambda: svc.embedded.stop())  # (a no-op unless the test failed midway)
    run_handler(svc, frames[:100])
    svc.flush(wait_for_redis=True)
    slow = short_tmp / "slow-redis-server"  # a slow start, as when loading a big RDB
    slow.write_text(f"#!/bin/sh\nsleep 0.5\nexec {redis_executable()} \"$@\"\n")
    slow.chmod(0o755)
    svc.embedded.executable = str(slow)
    os.kill(svc.embedded.pid, signal.SIGKILL)
    svc.embedded.process.wait()
    run_handler(svc, frames[100:])
    svc.flush()  # finds it gone: restarted, not waited for
    assert svc.stats["embedded_restarts"] == 1 and svc.stats["redis_up"] == 0
    with caplog.at_level(logging.WARNING):
        svc.on_stop()  # waits for the restarted server, writes the last batch, stops it
    assert svc.stats["redis_reconnects"] == 1 and svc.stats["backlog"] == 0
    assert not [rec for rec in caplog.records if "writes Redis did not take" in rec.getMessage()]
    saved = EmbeddedRedis(short_tmp / "run", save="")
    saved.start()  # loads what the restarted server saved at stop
    try:
        assert stored_everywhere(client(saved.url)) == f.last_per_topic(frames)
    finally:
        saved.stop()


def test_memory_is_bounded_by_max_keys_and_max_kinds(tmp_path, redis_url, caplog):
    svc = start(tmp_path, redis_url, max_keys=5, max_kinds=2)
    frames = [f.ticker(seq, f"BTC-X-{seq}") for seq in range(1, 11)]
    frames += [f.index(1), f.trade(2), f.trade(3)]  # kinds 2 and 3 (md.ticker is the first)
    run_handler(svc, frames)
    svc.on_stop()
    r = client(redis_url)
    # max_keys counts fields across kinds: 5 tickers fill it, 5 more and the index are left out
    assert r.hlen(b"hp:last:md.ticker") == 5 and svc.stats["keys_dropped"] == 6
    assert r.exists(b"hp:last:md.index") == 0
    assert r.xlen(b"hp:stream:md.ticker") == 10  # streams still get every frame of a stored kind
    assert r.xlen(b"hp:stream:md.index") == 1
    assert r.exists(b"hp:last:md.trade") == 0 and svc.stats["kinds_dropped"] == 2
    assert len(journal_records(tmp_path / "journal")) == len(frames)
    messages = [rec.message for rec in caplog.records]
    assert sum("max_keys" in msg for msg in messages) == 1 and sum("max_kinds" in msg for msg in messages) == 1


def test_a_password_is_never_logged_and_never_taken_from_the_config(tmp_path, monkeypatch, caplog, short_tmp):
    monkeypatch.setenv("REDIS_URL", f"unix://:s3cr3t-pw@{short_tmp}/nothing.sock")
    with caplog.at_level(logging.DEBUG):
        svc = start(tmp_path, "")
        run_handler(svc, [f.book(1)])
        svc.on_stop()
    assert svc.stats["redis_up"] == 0
    text = "\n".join(f"{rec.getMessage()} {vars(rec)}" for rec in caplog.records)
    assert "s3cr3t-pw" not in text and "***" in text
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(ConfigError, match="password"):
        start(tmp_path, "redis://:pw@127.0.0.1:6379/0")


def test_config_keys_have_the_documented_defaults():
    cfg = StoreWriterConfig()
    assert cfg.inputs == ["feed-deribit", "feed-index", "etl-filter", "strategy-box"] and cfg.topics == [""]
    assert (cfg.book_levels, cfg.fsync, cfg.journal_dir) == (10, "interval", "{run_dir}/../journal")
    assert StoreWriterService.decode_inputs is False
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"fsync": "sometimes"}, StoreWriterConfig)


def test_the_doc_lists_every_config_key_with_its_default_and_every_counter(tmp_path, redis_url):
    doc = (REPO / "docs" / "store-writer.md").read_text()
    config_table = doc.split("## Configuration (`[store-writer]`)")[1].split("\n## ")[0]
    documented = {}
    for row in re.findall(r"^\| (`.+?`) \| (.+?) \|", config_table, re.MULTILINE):
        names = re.findall(r"`(\w+)`", row[0])
        defaults = [d.strip().strip("`") for d in row[1].split(",")] if len(names) > 1 else [row[1].strip("`")]
        documented.update(zip(names, defaults))
    cfg = StoreWriterConfig()
    assert set(documented) == {field.name for field in msgspec.structs.fields(StoreWriterConfig)}
    for name, shown in documented.items():
        value = getattr(cfg, name)
        if isinstance(value, (int, float)):
            assert float(shown) == value, name
        else:
            assert json.loads(shown) == value, name
    counters_table = doc.split("## Counters (heartbeat `hb.store-writer`)")[1].split("\n## ")[0]
    counters = set(re.findall(r"^\| `(\w+)` \|", counters_table, re.MULTILINE))
    svc = start(tmp_path, redis_url)
    svc.on_stop()
    assert counters == {k for k in svc.stats if not k.startswith("journal_")} | {"journal_append_errors"}
    journal_doc = (REPO / "docs" / "journal.md").read_text().split("## Counters")[1]
    for name in (k for k in svc.stats if k.startswith("journal_") and k != "journal_append_errors"):
        assert f"`{name}`" in journal_doc, name
