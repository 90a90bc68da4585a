"""The journal writer: files per UTC day and family, rotation, compression, fsync policies,
crash leftovers, part numbers, a failing disk, the clock going back."""

from __future__ import annotations

import gzip
import os
import subprocess
import textwrap

import pytest

from hedgepipe.journal import MAGIC, JournalError, JournalWriter, journal_files, read_journal

from .conftest import PYTHON, REPO

DAY = 86_400 * 10**9
#: 2023-11-14T22:13:20Z
T0 = 1_700_000_000_000_000_000


def records_in(root) -> list[tuple[int, bytes, bytes]]:
    return [tuple(rec) for path in journal_files([root]) for rec in read_journal(path)]


def names(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.hpj*"))


def frame(i: int, family: str = "md") -> tuple[bytes, bytes]:
    return f"{family}.book.deribit.X-{i % 7}".encode(), b"\x81\xa1i" + i.to_bytes(4, "big") * 40


def test_records_go_to_one_file_per_family_and_read_back_in_order(tmp_path):
    w = JournalWriter(tmp_path)
    w.open()
    sent = []
    for i in range(300):
        topic, payload = frame(i, ("md", "clean", "hb")[i % 3])
        w.append(topic, payload, T0 + i)
        sent.append((T0 + i, topic, payload))
    w.close()
    assert names(tmp_path) == ["2023-11-14/clean.0001.hpj.gz", "2023-11-14/hb.0001.hpj.gz",
                               "2023-11-14/md.0001.hpj.gz"]
    for family in ("md", "clean", "hb"):
        got = list(read_journal(tmp_path / "2023-11-14" / f"{family}.0001.hpj.gz"))
        assert [tuple(r) for r in got] == [s for s in sent if s[1].startswith(family.encode())]
    assert w.stats.records == 300 and w.stats.files_compressed == 3


def test_a_topic_that_is_not_a_safe_file_name_goes_to_family_other(tmp_path):
    w = JournalWriter(tmp_path)
    w.open()
    w.append(b"../../etc.passwd", b"x", T0)
    w.append(b"\xff\xfe.bin", b"y", T0)
    w.close()
    assert names(tmp_path) == ["2023-11-14/other.0001.hpj.gz"]
    assert [r[1] for r in records_in(tmp_path)] == [b"../../etc.passwd", b"\xff\xfe.bin"]


def test_rotation_by_size_starts_numbered_parts_and_loses_nothing(tmp_path):
    w = JournalWriter(tmp_path, rotate_bytes=8192, buffer_bytes=1000)
    w.open()
    sent = []
    for i in range(200):  # ~190 bytes a record: ~38 KB, about 5 parts
        topic, payload = frame(i)
        w.append(topic, payload, T0 + i)
        sent.append((T0 + i, topic, payload))
    w.close()
    parts = names(tmp_path)
    assert len(parts) >= 4
    assert parts == [f"2023-11-14/md.{n:04d}.hpj.gz" for n in range(1, len(parts) + 1)]
    assert records_in(tmp_path) == sent
    for part in parts[:-1]:  # each part was closed just past the limit
        assert 8192 <= len(gzip.decompress((tmp_path / part).read_bytes())) < 8192 + 400


def test_the_utc_day_change_closes_and_compresses_the_day_and_starts_a_new_file(tmp_path):
    midnight = (T0 // DAY + 1) * DAY
    w = JournalWriter(tmp_path)
    w.open()
    w.append(b"md.index.x", b"before", midnight - 1)
    w.append(b"md.index.x", b"after", midnight)
    w.flush()
    assert w.open_paths() == [tmp_path / "2023-11-15" / "md.0001.hpj"]
    w.close()
    assert names(tmp_path) == ["2023-11-14/md.0001.hpj.gz", "2023-11-15/md.0001.hpj.gz"]
    assert [r[2] for r in read_journal(tmp_path / "2023-11-14/md.0001.hpj.gz")] == [b"before"]
    assert [r[2] for r in read_journal(tmp_path / "2023-11-15/md.0001.hpj.gz")] == [b"after"]


def day_folders(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_retention_deletes_day_folders_older_than_retain_days_when_a_day_begins(tmp_path):
    for day in ("2023-11-10", "2023-11-12", "2023-11-13"):
        (tmp_path / day).mkdir()
        (tmp_path / day / "md.0001.hpj.gz").write_bytes(b"")
    (tmp_path / "notes").mkdir()                 # not a day folder: never touched
    w = JournalWriter(tmp_path, retain_days=2)
    w.open()
    w.append(b"md.index.x", b"a", T0)            # 2023-11-14: keep the 13th and the 14th
    w.tick(0.0, T0)
    w.settle()
    assert day_folders(tmp_path) == ["2023-11-13", "2023-11-14", "notes"]
    w.append(b"hb.x", b"b", T0 + 1)
    w.tick(0.0, T0 + 1)                          # the same day again: nothing more to do
    w.append(b"md.index.x", b"c", T0 + DAY)      # 2023-11-15 begins: the 13th goes
    w.tick(0.0, T0 + DAY)
    w.settle()
    assert day_folders(tmp_path) == ["2023-11-14", "2023-11-15", "notes"]
    assert w.stats.days_pruned == 3 and w.stats.prune_skipped == 0
    w.close()
    assert sorted(r[2] for r in records_in(tmp_path)) == [b"a", b"b", b"c"]


def test_retention_waits_out_a_clock_that_jumps_days_ahead(tmp_path):
    w = JournalWriter(tmp_path, retain_days=1)
    w.open()
    w.append(b"md.index.x", b"a", T0)
    w.tick(0.0, T0)
    w.tick(0.0, T0 + 3 * DAY)                    # a bad clock: three days at once
    w.settle()
    assert day_folders(tmp_path) == ["2023-11-14"] and w.stats.prune_skipped == 1
    w.close()
    assert [r[2] for r in records_in(tmp_path)] == [b"a"]


def test_a_quiet_familys_file_is_closed_and_compressed_when_its_day_ends(tmp_path):
    w = JournalWriter(tmp_path)
    w.open()
    w.append(b"signal.box.x", b"quiet", T0)
    w.tick(0.0, (T0 // DAY + 1) * DAY)           # midnight passes; no new record of the family
    w.settle()
    assert names(tmp_path) == ["2023-11-14/signal.0001.hpj.gz"] and w.open_paths() == []
    w.close()


def test_a_record_the_format_cannot_hold_is_refused_and_counted(tmp_path):
    problems = []
    w = JournalWriter(tmp_path, on_error=lambda kind, detail: problems.append(kind))
    w.open()
    assert w.append(b"md." + b"x" * 70_000, b"p", T0) is False
    assert w.append(b"md.index.x", b"ok", T0) is True
    w.close()
    assert w.stats.refused == 1 and problems == ["journal_refused"]
    assert [r[2] for r in records_in(tmp_path)] == [b"ok"]


def test_retain_days_0_keeps_everything(tmp_path):
    (tmp_path / "2000-01-01").mkdir()
    w = JournalWriter(tmp_path)
    w.open()
    w.append(b"md.index.x", b"a", T0)
    w.tick(0.0, T0 + 5 * DAY)
    w.close()
    assert (tmp_path / "2000-01-01").is_dir() and w.stats.days_pruned == 0


def test_closed_files_are_gzip_and_the_open_one_is_plain_and_readable_while_written(tmp_path):
    w = JournalWriter(tmp_path, compress_level=1)
    w.open()
    w.append(b"md.book.a", b"one", T0)
    w.flush()
    path = tmp_path / "2023-11-14" / "md.0001.hpj"
    assert path.read_bytes().startswith(MAGIC)
    assert [r[2] for r in read_journal(path)] == [b"one"]  # a reader can follow the open file
    w.close()
    assert not path.exists()
    gz = path.with_name("md.0001.hpj.gz")
    assert gzip.decompress(gz.read_bytes()).startswith(MAGIC)
    assert [r[2] for r in read_journal(gz)] == [b"one"]


def test_a_file_left_open_by_a_crash_is_compressed_at_start_and_new_parts_follow_it(tmp_path):
    crash = textwrap.dedent(f"""
        import os, signal
        from hedgepipe.journal import JournalWriter
        w = JournalWriter({str(tmp_path)!r})
        w.open()
        for i in range(50):
            w.append(b"md.book.x", b"rec%d" % i, {T0} + i)
        w.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([PYTHON, "-c", crash], cwd=REPO, timeout=60)
    assert proc.returncode == -9
    assert names(tmp_path) == ["2023-11-14/md.0001.hpj"]  # left plain by the crash
    w = JournalWriter(tmp_path)
    w.open()
    w.append(b"md.book.x", b"after", T0 + 100)
    w.close()
    assert names(tmp_path) == ["2023-11-14/md.0001.hpj.gz", "2023-11-14/md.0002.hpj.gz"]
    assert [r[2] for r in records_in(tmp_path)] == [b"rec%d" % i for i in range(50)] + [b"after"]


def test_parts_are_numbered_after_existing_ones(tmp_path):
    day = tmp_path / "2023-11-14"
    for part in (1, 2, 7):
        w = JournalWriter(tmp_path)
        w.open()
        w.append(b"md.x", b"p", T0)
        w.close()
    assert names(tmp_path) == [f"2023-11-14/md.000{n}.hpj.gz" for n in (1, 2, 3)]
    (day / "md.0003.hpj.gz").rename(day / "md.0009.hpj.gz")
    w = JournalWriter(tmp_path)
    w.open()
    w.append(b"md.x", b"p", T0)
    w.append(b"hb.x", b"p", T0)
    w.close()
    assert "2023-11-14/md.0010.hpj.gz" in names(tmp_path)
    assert "2023-11-14/hb.0001.hpj.gz" in names(tmp_path)


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_each_fsync_policy_is_accepted_and_writes_the_same_journal(tmp_path, policy):
    w = JournalWriter(tmp_path, fsync=policy, fsync_interval_s=0.5)
    w.open()
    for i in range(20):
        w.append(b"md.x", b"%d" % i, T0 + i)
        w.tick(i * 0.1)
    w.close()
    assert [r[2] for r in records_in(tmp_path)] == [b"%d" % i for i in range(20)]


def test_an_unknown_fsync_policy_and_bad_sizes_are_refused(tmp_path):
    with pytest.raises(JournalError, match="fsync policy 'sometimes': want one of always, interval, never"):
        JournalWriter(tmp_path, fsync="sometimes")
    with pytest.raises(JournalError, match="compress level 11"):
        JournalWriter(tmp_path, compress_level=11)
    with pytest.raises(JournalError, match="rotate_bytes 10"):
        JournalWriter(tmp_path, rotate_bytes=10)


def test_a_directory_that_cannot_be_created_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    w = JournalWriter(tmp_path / "file" / "journal")
    with pytest.raises(JournalError, match="journal directory .*/file/journal is not writable"):
        w.open()


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path):
    first = JournalWriter(tmp_path)
    first.open()
    try:
        with pytest.raises(JournalError, match=f"in use by another writer \\(pid {os.getpid()}\\)"):
            JournalWriter(tmp_path).open()
    finally:
        first.close()
    second = JournalWriter(tmp_path)  # free again once the first closed
    second.open()
    second.close()


def test_the_clock_going_back_is_counted_and_stays_in_the_current_day_file(tmp_path):
    midnight = (T0 // DAY + 1) * DAY
    w = JournalWriter(tmp_path)
    w.open()
    w.append(b"md.x", b"a", midnight + 10)
    w.append(b"md.x", b"b", midnight - 10)  # back across midnight
    w.append(b"md.x", b"c", midnight + 20)
    w.close()
    assert w.stats.clock_backwards == 1
    assert names(tmp_path) == ["2023-11-15/md.0001.hpj.gz"]
    assert records_in(tmp_path) == [(midnight + 10, b"md.x", b"a"), (midnight - 10, b"md.x", b"b"),
                                    (midnight + 20, b"md.x", b"c")]


def _fill_the_disk(w: JournalWriter) -> int:
    """Point the open file's descriptor at /dev/full (every write: ENOSPC); returns a dup of
    the real file to put back."""
    f = next(iter(w._files.values()))
    real = os.dup(f.fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, f.fd)
    os.close(full)
    return real


def _free_the_disk(w: JournalWriter, real: int) -> None:
    f = next(iter(w._files.values()))
    os.lseek(real, 0, os.SEEK_END)
    os.dup2(real, f.fd)
    os.close(real)


def test_a_full_disk_keeps_records_in_memory_retries_and_loses_nothing(tmp_path):
    errors = []
    w = JournalWriter(tmp_path, buffer_bytes=256, on_error=lambda kind, detail: errors.append(kind))
    w.open()
    w.append(b"md.x", b"first", T0)
    w.flush()
    real = _fill_the_disk(w)
    for i in range(100):
        assert w.append(b"md.x", b"during-%d" % i, T0 + i)
    w.tick(1.0)
    assert w.stats.write_errors >= 1 and "write_error" in errors
    assert w.stats.pending_bytes > 0 and w.stats.dropped == 0
    _free_the_disk(w, real)
    w.tick(2.0)
    assert w.stats.pending_bytes == 0
    w.close()
    assert [r[2] for r in records_in(tmp_path)] == [b"first"] + [b"during-%d" % i for i in range(100)]


def test_a_full_disk_beyond_max_pending_bytes_refuses_and_counts_records(tmp_path):
    errors = []
    w = JournalWriter(tmp_path, buffer_bytes=100, max_pending_bytes=1000,
                      on_error=lambda kind, detail: errors.append(kind))
    w.open()
    w.append(b"md.x", b"first", T0)
    w.flush()
    real = _fill_the_disk(w)
    accepted = [i for i in range(100) if w.append(b"md.x", b"r%03d" % i, T0 + i)]
    assert 0 < len(accepted) < 100
    assert w.stats.dropped == 100 - len(accepted) and "journal_dropped" in errors
    _free_the_disk(w, real)
    w.close()
    assert [r[2] for r in records_in(tmp_path)] == [b"first"] + [b"r%03d" % i for i in accepted]
    assert w.stats.unwritten_bytes == 0
