"""Reading journals back: every intact record, and every bad byte accounted for and reported.

Files are made by the real JournalWriter (or laid out record by record with encode_record where
a test needs to know each record's offset), then cut, flipped or replaced.
"""

from __future__ import annotations

import gzip
import random
import struct
import zlib

import msgspec
import pytest

from hedgepipe.journal import (MAGIC, JournalError, NotAJournal, Record, check_journal, encode_record,
                               journal_files, read_journal)

from ._journal_helpers import T0, md_records, write_journal

HEAD = len(MAGIC)


def lay_out(tmp_path, records, name="j.hpj"):
    """A plain journal of ``records`` (ts, topic, payload); (path, offset of each record, bytes)."""
    encoded = [encode_record(ts, topic, payload) for ts, topic, payload in records]
    offsets, at = [], HEAD
    for e in encoded:
        offsets.append(at)
        at += len(e)
    data = MAGIC + b"".join(encoded)
    path = tmp_path / name
    path.write_bytes(data)
    return path, offsets, data


def read_all(path, chunk_bytes=1 << 20):
    problems = []
    records = list(read_journal(path, problems.append, chunk_bytes=chunk_bytes))
    return records, problems


def as_records(records):
    return [Record(ts, topic, payload) for ts, topic, payload in records]


def test_the_writers_files_read_back_exactly_in_write_order_including_a_clock_that_went_back(tmp_path):
    records = md_records(200)
    records[100:102] = [records[101], records[100]]  # the second is stamped earlier than the first
    assert records[101][0] < records[100][0]
    [path] = write_journal(tmp_path / "j", records)
    assert path.name == "md.0001.hpj.gz"
    got, problems = read_all(path)
    assert got == as_records(records)
    assert problems == []


@pytest.mark.parametrize("chunk_bytes", [20, 21, 57, 4096, 1 << 20])
def test_any_chunk_size_reads_the_same_records(tmp_path, chunk_bytes):
    records = md_records(60)
    path, _, _ = lay_out(tmp_path, records)
    assert read_all(path, chunk_bytes) == (as_records(records), [])


@pytest.mark.parametrize("cut", [1, 5, 19, 20, 21, 40])
def test_a_journal_that_ends_mid_record_yields_every_whole_record_and_reports_the_torn_tail(tmp_path, cut):
    records = md_records(10)
    path, offsets, data = lay_out(tmp_path, records)
    path.write_bytes(data[:-cut])
    got, problems = read_all(path, chunk_bytes=64)
    assert got == as_records(records[:-1])
    [torn] = problems
    assert (torn.kind, torn.path, torn.offset) == ("torn_tail", str(path), offsets[-1])
    assert torn.skipped_bytes == len(data) - cut - offsets[-1]
    assert "ends inside a record" in torn.detail


def test_a_corrupt_record_in_the_middle_is_skipped_with_its_offset_and_the_rest_still_reads(tmp_path):
    records = md_records(20)
    path, offsets, data = lay_out(tmp_path, records)
    bad = bytearray(data)
    bad[offsets[7] + 30] ^= 0xFF  # a payload byte: the CRC no longer matches
    path.write_bytes(bytes(bad))
    got, problems = read_all(path)
    assert got == as_records(records[:7] + records[8:])
    [corrupt] = problems
    assert (corrupt.kind, corrupt.offset, corrupt.skipped_bytes) == ("corrupt", offsets[7],
                                                                     offsets[8] - offsets[7])


def test_a_corrupt_size_field_claiming_past_the_end_is_corruption_not_a_torn_tail(tmp_path):
    """The size says the record runs past the end of the file: the records after it are
    still intact and must come out (an early reader took everything after for a torn tail)."""
    records = md_records(50)
    path, offsets, data = lay_out(tmp_path, records)
    bad = bytearray(data)
    struct.pack_into("<I", bad, offsets[20] + 2, 10 * len(data))
    path.write_bytes(bytes(bad))
    got, problems = read_all(path, chunk_bytes=100)
    assert got == as_records(records[:20] + records[21:])
    assert [(p.kind, p.offset, p.skipped_bytes) for p in problems] == [
        ("corrupt", offsets[20], offsets[21] - offsets[20])]


def test_random_damage_loses_only_the_records_it_touches_and_every_byte_is_accounted_for(tmp_path):
    """Whatever is overwritten, inserted or cut: each record the damage did not touch comes
    out, nothing comes out that was not written, and every byte after the header is either in
    a record read or in a reported skip."""
    rng = random.Random(4)
    records = md_records(120)
    want = as_records(records)
    for trial in range(80):
        path, offsets, data = lay_out(tmp_path, records, name=f"t{trial}.hpj")
        ends = offsets[1:] + [len(data)]
        cut = rng.randrange(1, 200) if rng.random() < 0.3 else 0
        bad = bytearray(data[:len(data) - cut])
        touched = {i for i, end in enumerate(ends) if end > len(bad)}
        # Damage in original coordinates, applied from the end so earlier positions hold.
        damage = sorted(((rng.randrange(HEAD, len(bad)), rng.choice([1, 2, 7, 60, 300]),
                          rng.random() < 0.3) for _ in range(rng.randint(1, 4))), reverse=True)
        for at, span, insert in damage:
            if insert:
                bad[at:at] = bytes(rng.randrange(256) for _ in range(span))
                touched |= {i for i, off in enumerate(offsets) if off < at < ends[i]}
            else:
                bad[at:at + span] = bytes(rng.randrange(256) for _ in range(len(bad[at:at + span])))
                touched |= {i for i, off in enumerate(offsets) if off < at + span and at < ends[i]}
        path.write_bytes(bytes(bad))
        for chunk in (20, 333, 1 << 20):
            got, problems = read_all(path, chunk)
            assert set(got) <= set(want)
            assert [r for i, r in enumerate(want) if i not in touched and r not in got] == [], (trial, chunk)
            read_bytes = sum(20 + len(r.topic) + len(r.payload) for r in got)
            assert read_bytes + sum(p.skipped_bytes for p in problems) == len(bad) - HEAD, (trial, chunk)
            assert all(p.kind in ("corrupt", "torn_tail") for p in problems)


def test_a_gzip_journal_cut_mid_stream_yields_every_record_decompressible_before_the_cut(tmp_path):
    records = [(T0 + i, b"md.book.deribit.X", random.Random(i).randbytes(40) + bytes(160))
               for i in range(20_000)]
    [path] = write_journal(tmp_path / "j", records)
    data = path.read_bytes()
    cut = tmp_path / "cut.hpj.gz"
    cut.write_bytes(data[:len(data) * 2 // 3])
    plain = zlib.decompressobj(31).decompress(data[:len(data) * 2 // 3])
    whole, at = 0, HEAD  # records wholly inside what the cut stream still holds
    while at + 20 <= len(plain) and at + 20 + struct.unpack_from("<I", plain, at + 2)[0] <= len(plain):
        at += 20 + struct.unpack_from("<I", plain, at + 2)[0]
        whole += 1
    got, problems = read_all(cut)
    assert 0 < whole < len(records)
    assert got == as_records(records[:whole])
    [torn] = problems
    assert torn.kind == "torn_tail" and torn.offset == at
    assert "compressed stream ends early" in torn.detail


def test_a_gzip_stream_cut_exactly_between_records_is_still_reported(tmp_path):
    records = md_records(3)
    _, offsets, data = lay_out(tmp_path, records)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    stream = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)  # no end marker
    path = tmp_path / "sync.hpj.gz"
    path.write_bytes(stream)
    got, problems = read_all(path)
    assert got == as_records(records)
    assert [(p.kind, p.offset) for p in problems] == [("torn_tail", len(data))]


@pytest.mark.parametrize("content, torn_header", [
    (b"", True),
    (MAGIC[:5], True),
    (b"timestamp,topic,price\n1,md.book,2\n", False),
    (msgspec.msgpack.encode({"topic": "md.book.deribit.X", "payload": b"x"}), False),
    (gzip.compress(b"just some text, not a journal\n"), False),
    (gzip.compress(b""), True),
    (gzip.compress(MAGIC + encode_record(1, b"t", b"p"))[:12], True),  # cut inside the header
    (b"\x1f\x8b but not gzip", False),
])
def test_what_is_not_a_journal_is_refused_naming_the_file(tmp_path, content, torn_header):
    path = tmp_path / "x.hpj.gz"
    path.write_bytes(content)
    with pytest.raises(NotAJournal) as info:
        check_journal(path)
    assert str(path) in str(info.value)
    assert info.value.torn_header is torn_header
    with pytest.raises(NotAJournal):
        next(read_journal(path))


def test_a_plain_journal_named_hpj_gz_and_a_gzip_named_hpj_are_both_read(tmp_path):
    records = md_records(5)
    _, _, data = lay_out(tmp_path, records)
    (tmp_path / "plain.hpj.gz").write_bytes(data)
    (tmp_path / "zipped.hpj").write_bytes(gzip.compress(data))
    for name in ("plain.hpj.gz", "zipped.hpj"):
        assert read_all(tmp_path / name) == (as_records(records), [])


def test_a_file_that_cannot_be_opened_is_a_journal_error_not_a_format_error(tmp_path):
    with pytest.raises(JournalError) as info:
        check_journal(tmp_path / "missing.hpj")
    assert not isinstance(info.value, NotAJournal)
    assert "missing.hpj" in str(info.value)


def test_journal_files_expands_directories_in_order_and_skips_a_plain_file_already_compressed(tmp_path):
    day1, day2 = tmp_path / "2026-11-22", tmp_path / "2026-11-23"
    for day in (day1, day2):
        day.mkdir()
    for path in (day2 / "md.0002.hpj", day2 / "md.0001.hpj.gz", day2 / "md.0001.hpj",
                 day1 / "hb.0001.hpj.gz", day2 / "notes.txt", day2 / "md.0003.hpj.gz.tmp"):
        path.write_bytes(MAGIC)
    named = tmp_path / "elsewhere.bin"
    named.write_bytes(MAGIC)
    assert journal_files([tmp_path, named]) == [day1 / "hb.0001.hpj.gz", day2 / "md.0001.hpj.gz",
                                                day2 / "md.0002.hpj", named]


def test_an_open_file_compressed_after_it_was_listed_is_read_from_its_gz(tmp_path):
    from hedgepipe.journal import JournalWriter, compress_file, journal_files
    w = JournalWriter(tmp_path)
    w.open()
    for ts, topic, payload in md_records(50):
        w.append(topic, payload, ts)
    w.flush()
    listed = journal_files([tmp_path])                 # hedgepipe stats lists today's files...
    assert [p.name for p in listed] == ["md.0001.hpj"]
    compress_file(listed[0])                           # ...the writer closes one meanwhile
    assert len(list(read_journal(listed[0]))) == 50
    w.close()


def test_journal_errors_map_to_exit_codes_66_and_65():
    from hedgepipe.errors import exit_code_for
    assert exit_code_for(JournalError("vanished")) == 66
    assert exit_code_for(NotAJournal("not one")) == 65
