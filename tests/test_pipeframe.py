import msgpack
import pytest

from hedgepipe.pipeframe import FrameReader, PipeEvent, encode_frame

from .frames import TOPIC, book_payload


@pytest.mark.parametrize("topic_len, payload_len", [
    (5, 10), (31, 255), (32, 256), (200, 65535), (256, 65536), (40, 300_000)])
def test_frames_are_plain_msgpack_arrays(topic_len, payload_len):
    topic = b"t" * topic_len
    payload = bytes(range(256)) * (payload_len // 256) + b"x" * (payload_len % 256)
    frame = encode_frame(topic, payload)
    # Any msgpack reader sees [str, bin]: the stream is readable without our code.
    assert msgpack.unpackb(frame, raw=True) == [topic, payload]
    reader = FrameReader(max_payload=1 << 20)
    assert reader.feed(frame) == [(topic, payload)]
    assert reader.pending == 0


def test_byte_by_byte_feeding_yields_the_same_frames():
    frames = [(TOPIC.encode(), book_payload(i)) for i in range(1, 6)]
    stream = b"".join(encode_frame(t, p) for t, p in frames)
    reader = FrameReader(max_payload=1 << 20)
    got = []
    for i in range(len(stream)):
        got.extend(reader.feed(stream[i:i + 1]))
    assert got == frames
    assert reader.pending == 0


def test_garbage_between_frames_is_reported_once_and_skipped():
    good1 = encode_frame(b"md.a", b"one")
    good2 = encode_frame(b"md.b", b"two")
    reader = FrameReader(max_payload=1024)
    out = reader.feed(good1 + b"\x00\xffnot a frame\x92\x01\x02" + good2)
    assert out[0] == (b"md.a", b"one")
    assert isinstance(out[1], PipeEvent) and out[1].kind == "decode_error"
    assert out[2] == (b"md.b", b"two")
    assert len(out) == 3


def test_trailing_garbage_is_reported():
    reader = FrameReader(max_payload=1024)
    out = reader.feed(encode_frame(b"md.a", b"one") + b"zzzz")
    assert out[0] == (b"md.a", b"one")
    assert out[1].kind == "decode_error" and out[1].skipped == 4


def test_oversized_payload_is_skipped_by_length_without_buffering():
    big = encode_frame(b"md.big", b"x" * 5000)
    after = encode_frame(b"md.after", b"fine")
    reader = FrameReader(max_payload=1000)
    out = []
    for i in range(0, len(big), 700):  # arrives in pieces
        out.extend(reader.feed(big[i:i + 700]))
        assert reader.buffered < 1000  # never holds the whole oversized payload
    out.extend(reader.feed(after))
    assert [o.kind for o in out if isinstance(o, PipeEvent)] == ["oversized"]
    assert out[-1] == (b"md.after", b"fine")


def test_truncated_tail_stays_pending():
    frame = encode_frame(b"md.a", b"payload")
    reader = FrameReader(max_payload=1024)
    assert reader.feed(frame[:-3]) == []
    assert reader.pending == len(frame) - 3


def test_topic_with_spaces_or_control_bytes_is_not_a_frame():
    reader = FrameReader(max_payload=1024)
    bogus = b"\x92\xa3a b\xc4\x01x"
    out = reader.feed(bogus + encode_frame(b"md.ok", b"y"))
    assert out[-1] == (b"md.ok", b"y")
    assert out[0].kind == "decode_error"


def test_a_false_frame_start_claiming_gigabytes_is_garbage_not_a_skip():
    reader = FrameReader(max_payload=1024)
    bogus = b"\x92\xa4md.x\xc6\x7f\xff\xff\xff"          # "2 GiB payload follows"
    out = reader.feed(bogus + encode_frame(b"md.ok", b"y"))
    assert out[-1] == (b"md.ok", b"y")                    # the good frame behind it survives
    assert [o.kind for o in out if isinstance(o, PipeEvent)] == ["decode_error"]


def test_finish_reports_garbage_and_a_cut_frame_at_end_of_stream():
    reader = FrameReader(max_payload=1024)
    assert reader.feed(b"garbage!\x92") == []              # garbage, then what may be a frame
    events = reader.finish()
    assert [(e.kind, e.skipped) for e in events] == [("decode_error", 8), ("truncated", 1)]
    assert reader.pending == 0 and reader.finish() == []


def test_a_pipe_output_that_gives_up_stops_on_a_frame_boundary():
    """Past the drain deadline, with a reader too slow to take everything, what reached the
    pipe is whole frames only: the reader never sees half a frame."""
    import os
    import threading
    import time

    from hedgepipe.bus import PipeOutput

    r, w = os.pipe()
    got = bytearray()
    go = threading.Event()

    def slow_reader():  # starts only once the writer is stuck, then reads to the end
        go.wait(10)
        while chunk := os.read(r, 1 << 16):
            got.extend(chunk)

    thread = threading.Thread(target=slow_reader, daemon=True)
    thread.start()
    out = PipeOutput(fd=w)
    for i in range(5000):                                  # ~1 MB: far more than the pipe holds
        out.send(b"md.book.x", bytes([i % 256]) * 211)

    def deadline_passed():
        go.set()                                           # the writer is stuck: let it drain
        return time.monotonic() - 1

    lost = out.flush(deadline_passed)
    os.close(w)
    thread.join(10)
    os.close(r)
    reader = FrameReader(max_payload=1024)
    frames = reader.feed(bytes(got))
    assert reader.pending == 0                             # ends on a frame boundary
    assert len(frames) + lost == 5000 and 0 < lost < 5000
