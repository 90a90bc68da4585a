"""The FIX session state machine fed with crafted counterparty bytes, on a fake clock."""

from __future__ import annotations

import base64
import hashlib
import logging

import pytest
import simplefix

from hedgepipe.clock import FakeClock
from hedgepipe.venues.deribit.fix_session import FixConfig, FixSession
from hedgepipe.venues.deribit.fix_wire import FileSeqStore, FixFramer, SeqStore

SECRET = "s3cr3t-client-secret"


def counterparty(seq: int, msg_type: str, fields=(), poss_dup=False, sender="DERIBITSERVER") -> bytes:
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, msg_type, header=True)
    m.append_pair(49, sender, header=True)
    m.append_pair(56, "HEDGEPIPE", header=True)
    m.append_pair(34, seq, header=True)
    if poss_dup:
        m.append_pair(43, "Y", header=True)
    m.append_pair(52, "20240101-00:00:00.000", header=True)
    for tag, value in fields:
        m.append_pair(tag, value)
    return m.encode()


def sent(session: FixSession) -> list[simplefix.FixMessage]:
    parser = simplefix.FixParser()
    parser.append_buffer(session.take_outgoing())
    out = []
    while (m := parser.get_message()) is not None:
        out.append(m)
    return out


def new_session(reset=True, cod=True, store=None) -> tuple[FixSession, FakeClock]:
    clock = FakeClock()
    cfg = FixConfig(sender_comp_id="HEDGEPIPE", client_id="client-id-1", client_secret=SECRET,
                    heartbeat_s=1, cancel_on_disconnect=cod, reset_seq_on_logon=reset)
    return FixSession(cfg, store or SeqStore(), clock=clock, nonce=lambda n: b"\x07" * n), clock


def logged_on(**kw) -> tuple[FixSession, FakeClock]:
    session, clock = new_session(**kw)
    session.connect()
    sent(session)
    session.receive(counterparty(1, "A", [(98, 0), (108, 1), (141, "Y")]))
    assert session.state == "active"
    return session, clock


def test_logon_carries_the_deribit_digest_and_never_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    session, clock = new_session()
    session.connect()
    raw_bytes = session.take_outgoing()
    assert SECRET.encode() not in raw_bytes
    parser = simplefix.FixParser()
    parser.append_buffer(raw_bytes)
    logon = parser.get_message()
    assert logon.get(35) == b"A" and logon.get(34) == b"1" and logon.get(141) == b"Y"
    raw = logon.get(96)
    stamp, nonce = raw.split(b".", 1)
    assert int(stamp) == clock.time_ns() // 1_000_000
    assert base64.b64decode(nonce) == b"\x07" * 32
    assert int(logon.get(95)) == len(raw)
    assert logon.get(554) == base64.b64encode(hashlib.sha256(raw + SECRET.encode()).digest())
    assert logon.get(553) == b"client-id-1" and logon.get(108) == b"1" and logon.get(9001) == b"Y"
    assert SECRET not in repr(session.cfg) and SECRET not in caplog.text


def test_bad_checksum_and_bad_body_length_are_counted_and_skipped():
    session, _ = logged_on()
    good = counterparty(2, "0")
    bad_sum = counterparty(3, "0")[:-4] + b"000\x01"
    long_len = counterparty(3, "0").replace(b"\x019=", b"\x019=9", 1)
    short = counterparty(3, "0")
    short = short.replace(b"9=" + short.split(b"\x01")[1][2:], b"9=5", 1)
    session.receive(b"junk" + good + bad_sum + long_len + short + counterparty(3, "1", [(112, "x")]))
    assert session.counters["garbage"] == 1
    assert session.counters["bad_checksum"] == 1
    assert session.counters["bad_body_length"] == 2
    assert session.counters["in_0"] == 1 and session.state == "active"
    assert [m.get(112) for m in sent(session)] == [b"x"]  # the TestRequest after them still answered


def test_framer_waits_for_a_split_frame():
    framer = FixFramer()
    frame = counterparty(2, "0")
    assert framer.feed(frame[:7]) == [] and framer.feed(frame[7:30]) == []
    assert framer.feed(frame[30:]) == [frame]


def test_seq_too_high_queues_asks_for_resend_and_gap_fill_releases_in_order():
    session, _ = logged_on()
    assert session.receive(counterparty(5, "W", [(55, "BTC-PERPETUAL")])) == []
    assert session.receive(counterparty(6, "X", [(55, "BTC-PERPETUAL")])) == []
    resend = sent(session)
    assert [(m.get(35), m.get(7), m.get(16)) for m in resend] == [(b"2", b"2", b"0")]  # only one request
    app = session.receive(counterparty(2, "4", [(123, "Y"), (36, 5)], poss_dup=True))
    assert [m.get(35) for m in app] == [b"W", b"X"]
    assert session.store.next_target == 7 and session.counters["seq_too_high"] == 2
    assert session.receive(counterparty(5, "W", [(55, "BTC-PERPETUAL")], poss_dup=True)) == []
    assert session.counters["duplicate"] == 1


def test_seq_too_low_without_possdup_logs_out_and_disconnects():
    session, _ = logged_on()
    session.receive(counterparty(2, "0"))
    session.receive(counterparty(2, "0"))
    [logout] = sent(session)
    assert logout.get(35) == b"5" and b"too low" in logout.get(58)
    assert session.state == "closed" and session.counters["seq_too_low"] == 1


def test_logon_answer_with_too_low_seq_is_fatal():
    store = SeqStore()
    store.next_target = 10
    session, _ = new_session(reset=False, store=store)
    session.connect()
    sent(session)
    session.receive(counterparty(3, "A", [(98, 0), (108, 1)]))
    assert session.disconnect_reason.startswith("MsgSeqNum too low")


def test_heartbeats_test_request_and_silence():
    session, clock = logged_on()
    clock.advance(1.0)
    session.tick()
    assert [m.get(35) for m in sent(session)] == [b"0"]
    session.receive(counterparty(2, "1", [(112, "ping")]))
    [hb] = sent(session)
    assert hb.get(35) == b"0" and hb.get(112) == b"ping"
    clock.advance(1.2)
    session.tick()
    test_req = [m for m in sent(session) if m.get(35) == b"1"]
    assert len(test_req) == 1
    session.receive(counterparty(3, "0", [(112, test_req[0].get(112).decode())]))
    assert session.counters["test_request_answered"] == 1
    clock.advance(1.2)
    session.tick()
    assert session.state == "active"
    clock.advance(1.2)
    session.tick()
    assert session.state == "closed" and session.counters["silent_counterparty"] == 1
    assert sent(session)[-1].get(35) == b"5"


def test_a_test_request_answer_after_another_message_still_counts():
    """The counterparty's regular heartbeat can cross our TestRequest on the wire: the answer
    that follows must still be matched (QuickFIX did this, now and then)."""
    session, clock = logged_on()
    clock.advance(0.5)
    req_id = session.test_request()
    sent(session)
    clock.advance(0.1)
    session.receive(counterparty(2, "0"))                 # a plain heartbeat first
    session.tick()                                        # (liveness: it is alive)
    session.receive(counterparty(3, "0", [(112, req_id)]))
    assert session.counters["test_request_answered"] == 1
    assert session.state == "active"


def test_resend_request_is_answered_with_a_gap_fill():
    session, _ = logged_on()
    session.send(b"V", [(262, "r1")])
    session.send(b"V", [(262, "r2")])
    session.receive(counterparty(2, "2", [(7, 2), (16, 0)]))
    [gap_fill] = sent(session)[-1:]
    assert (gap_fill.get(35), gap_fill.get(34), gap_fill.get(43), gap_fill.get(123), gap_fill.get(36)) == \
        (b"4", b"2", b"Y", b"Y", b"4")
    assert session.store.next_sender == 4


def test_sequence_reset_mode_moves_forward_only():
    session, _ = logged_on()
    session.receive(counterparty(99, "4", [(36, 50)]))
    assert session.store.next_target == 50 and session.counters["seq_resets"] == 1
    session.receive(counterparty(50, "4", [(36, 10)]))
    [reject] = sent(session)
    assert reject.get(35) == b"3" and reject.get(373) == b"5"
    assert session.store.next_target == 50 and session.state == "active"


def test_reject_is_counted_and_logout_both_ways():
    session, _ = logged_on()
    session.receive(counterparty(2, "3", [(45, 1), (373, 1), (58, "bad tag")]))
    assert session.counters["rejects"] == 1 and session.state == "active"
    session.logout("bye")
    assert sent(session)[0].get(35) == b"5" and session.state == "logout_sent"
    session.receive(counterparty(3, "5"))
    assert session.disconnect_reason == "logout confirmed"

    other, _ = logged_on()
    other.receive(counterparty(2, "5", [(58, "maintenance")]))
    assert [m.get(35) for m in sent(other)] == [b"5"]
    assert other.state == "closed" and "maintenance" in other.disconnect_reason


def test_logon_rejected_for_a_bad_secret():
    session, _ = new_session()
    session.connect()
    sent(session)
    session.receive(counterparty(1, "5", [(58, "invalid credentials")]))
    assert session.counters["logon_rejected"] == 1 and session.state == "closed"


def test_wrong_comp_id_is_rejected():
    session, _ = logged_on()
    session.receive(counterparty(2, "0", sender="SOMEONE"))
    assert [m.get(35) for m in sent(session)] == [b"3", b"5"]
    assert session.counters["bad_comp_id"] == 1


def test_file_store_round_trip_and_corruption(tmp_path):
    store = FileSeqStore(tmp_path / "seq")
    store.load()
    store.next_sender, store.next_target = 17, 42
    store.save()
    store.close()
    again = FileSeqStore(tmp_path / "seq")
    again.load()
    assert (again.next_sender, again.next_target) == (17, 42)
    again.close()
    (tmp_path / "bad").write_text("x y\n")
    with pytest.raises(ValueError, match="corrupt"):
        FileSeqStore(tmp_path / "bad").load()
