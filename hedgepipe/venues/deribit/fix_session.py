"""Deribit FIX 4.4 session: a pure state machine (bytes in, app messages and bytes out, injected clock).

Call ``connect()`` once the TCP connection is up (queues the Logon), ``receive(data)`` with what was
read (returns application messages in sequence order), ``tick()`` for timers, ``send(...)`` for
application messages, and write ``take_outgoing()`` to the socket. When ``disconnect_reason`` is set
the connection must be closed. See docs/fix.md for the rules followed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import simplefix

from hedgepipe.clock import SystemClock
from hedgepipe.logs import OncePerKind
from hedgepipe.venues.deribit.fix_wire import BadFrame, FixFramer, SeqStore, logon_password, raw_data

log = logging.getLogger("hedgepipe.fix")

#: Messages the session layer consumes; everything else is handed to the application.
ADMIN_TYPES = frozenset(b"012345A")
MAX_QUEUED = 100_000  # messages held while a gap is being filled


@dataclass
class FixConfig:
    sender_comp_id: str
    client_id: str
    client_secret: str = field(repr=False)
    target_comp_id: str = "DERIBITSERVER"
    heartbeat_s: int = 30
    cancel_on_disconnect: bool = False  # Y when trading, so a lost session cancels its orders
    reset_seq_on_logon: bool = False
    silence_margin: float = 0.2         # fraction of HeartBtInt allowed for transmission delay
    logon_timeout_s: float = 10.0
    logout_timeout_s: float = 2.0


class FixSession:
    def __init__(self, config: FixConfig, store: SeqStore, clock=SystemClock(), nonce=os.urandom):
        self.cfg = config
        self.store = store
        self.clock = clock
        self._nonce = nonce
        self.state = "idle"  # idle, logon_sent, active, logout_sent, closed
        self.disconnect_reason: str | None = None
        self.counters: Counter[str] = Counter()
        self._report = OncePerKind(log, clock=clock.monotonic)
        self._framer = FixFramer()
        self._parser = simplefix.FixParser()
        self._out: list[bytes] = []
        self._app: list[simplefix.FixMessage] = []
        self._queue: dict[int, simplefix.FixMessage | None] = {}  # None: consumed on arrival
        self._resend_until = 0      # last seq asked for by our outstanding ResendRequest
        self._test_req: str | None = None  # the last TestReqID we sent, until answered
        self._probing = False
        self._test_req_at = self._last_sent = self._last_recv = self._state_at = 0.0

    # -- driving ---------------------------------------------------------------------------
    def connect(self) -> None:
        """The TCP connection is up: send Logon."""
        cfg = self.cfg
        if cfg.reset_seq_on_logon:
            self.store.next_sender = self.store.next_target = 1
            self.store.save()
        raw = raw_data(self.clock.time_ns() // 1_000_000, self._nonce(32))
        fields = [(98, 0), (108, cfg.heartbeat_s), (95, len(raw)), (96, raw), (553, cfg.client_id),
                  (554, logon_password(raw, cfg.client_secret))]
        if cfg.reset_seq_on_logon:
            fields.append((141, "Y"))
        fields.append((9001, "Y" if cfg.cancel_on_disconnect else "N"))
        self._last_recv = self.clock.monotonic()
        self._set_state("logon_sent")
        self._send(b"A", fields)

    def receive(self, data: bytes) -> list[simplefix.FixMessage]:
        for item in self._framer.feed(data):
            if isinstance(item, BadFrame):
                self._bad(item.kind, f"FIX frame ignored: {item.kind}", detail=item.detail)
                continue
            self._parser.append_buffer(item)
            try:
                msg = self._parser.get_message()
            except simplefix.errors.ParserError as exc:
                self._parser.reset()
                self._bad("unparseable", "FIX frame ignored: fields do not parse", detail=repr(exc))
                continue
            if msg is not None:
                self._on_message(msg)
        app, self._app = self._app, []
        return app

    def tick(self) -> None:
        now, hb = self.clock.monotonic(), self.cfg.heartbeat_s
        if self.state == "logon_sent" and now - self._state_at > self.cfg.logon_timeout_s:
            self._disconnect("no Logon answer", "logon_timeout")
        elif self.state == "logout_sent" and now - self._state_at > self.cfg.logout_timeout_s:
            self._disconnect("Logout not confirmed", "logout_timeout")
        if self.state != "active":
            return
        if now - self._last_sent >= hb:
            self._send(b"0", [])
        silent = now - self._last_recv
        if self._probing and self._last_recv > self._test_req_at:
            # The counterparty spoke since: it is alive. The TestRequest id is kept, so its
            # answer is still recognised if it comes after some other message.
            self._probing = False
        limit = hb * (1 + self.cfg.silence_margin)
        if not self._probing and silent >= limit:
            self.test_request()
        elif self._probing and now - self._test_req_at >= limit:
            self._logout_and_close(f"no answer to TestRequest {self._test_req}", "silent_counterparty")

    def take_outgoing(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def connection_lost(self) -> None:
        if self.state != "closed":
            self._disconnect("connection lost", "connection_lost")

    # -- requests --------------------------------------------------------------------------
    def send(self, msg_type: bytes, fields: list[tuple[int, object]]) -> int:
        """Send an application message; returns its MsgSeqNum."""
        if self.state != "active":
            raise RuntimeError(f"FIX session is {self.state}, not active")
        return self._send(msg_type, fields)

    def test_request(self) -> str:
        self._test_req = f"TEST{self.store.next_sender}"
        self._test_req_at = self.clock.monotonic()
        self._probing = True  # waiting to hear anything at all from the counterparty
        self._send(b"1", [(112, self._test_req)])
        return self._test_req

    def logout(self, text: str = "") -> None:
        self._set_state("logout_sent")
        self._send(b"5", [(58, text)] if text else [])

    def reset_sequence(self, new_seq: int) -> None:
        """SequenceReset-Reset(4, 123=N): our next MsgSeqNum becomes ``new_seq``."""
        self._send(b"4", [(123, "N"), (36, new_seq)], seq=self.store.next_sender)
        self.store.next_sender = new_seq
        self.store.save()

    def request_resend(self, begin: int, end: int = 0) -> None:
        self._resend_until = max(self._resend_until, end or self.store.next_target)
        self._send(b"2", [(7, begin), (16, end)])

    # -- inbound ---------------------------------------------------------------------------
    def _on_message(self, m: simplefix.FixMessage) -> None:
        mtype, seq_txt = m.get(35), m.get(34)
        if mtype is None or seq_txt is None or not seq_txt.isdigit():
            self._bad("bad_header", "FIX message ignored: no MsgType or MsgSeqNum", msg_type=mtype)
            return
        seq = int(seq_txt)
        self._last_recv = self.clock.monotonic()
        self.counters[f"in_{mtype.decode(errors='replace')}"] += 1
        if m.get(49) != self.cfg.target_comp_id.encode() or m.get(56) != self.cfg.sender_comp_id.encode():
            self._send(b"3", [(45, seq), (373, 9), (58, "CompID problem")])
            self._logout_and_close(f"wrong CompIDs {m.get(49)!r}->{m.get(56)!r}", "bad_comp_id")
            return
        if self.state == "logon_sent":
            if mtype == b"A":
                self._on_logon(m, seq)
            elif mtype == b"5":
                self.counters["logon_rejected"] += 1
                log.error("Deribit rejected the FIX Logon: %s", (m.get(58) or b"").decode(errors="replace"))
                self._disconnect("logon rejected", None)
            else:
                self._disconnect(f"first message is {mtype!r}, not Logon", "not_logon")
            return
        if self.state not in ("active", "logout_sent"):
            return
        if mtype == b"4" and m.get(123) != b"Y":
            self._on_reset(m)
            return
        expected = self.store.next_target
        if seq > expected:
            self._on_gap(m, mtype, seq, expected)
        elif seq < expected:
            if m.get(43) == b"Y":
                self.counters["duplicate"] += 1  # a resend of something we already have
            else:
                self._logout_and_close(f"MsgSeqNum too low, expecting {expected} but received {seq}",
                                       "seq_too_low")
        else:
            self._in_order(m, seq)

    def _on_logon(self, m: simplefix.FixMessage, seq: int) -> None:
        self._set_state("active")
        self.counters["logons"] += 1
        log.info("FIX session logged on", extra={"seq": seq, "heartbeat_s": self.cfg.heartbeat_s})
        expected = self.store.next_target
        if seq < expected:
            self._logout_and_close(f"MsgSeqNum too low, expecting {expected} but received {seq}",
                                   "seq_too_low")
        elif seq > expected:
            self._on_gap(None, b"A", seq, expected)
        else:
            self._in_order(None, seq)

    def _on_gap(self, m, mtype: bytes, seq: int, expected: int) -> None:
        self.counters["seq_too_high"] += 1
        if mtype == b"5":  # no point asking a leaving counterparty to resend
            self._logout_reply_and_close(m)
            return
        if mtype == b"2":  # answer now: it is waiting for our messages, not theirs
            self._dispatch(m, mtype)
            m = None
        if len(self._queue) < MAX_QUEUED:
            self._queue[seq] = m
        if expected > self._resend_until:
            self._report("seq_gap", "FIX sequence gap: asking for a resend", expected=expected, received=seq)
            self.request_resend(expected, 0)
            self._resend_until = seq - 1

    def _in_order(self, m, seq: int) -> None:
        self.store.next_target = seq + 1
        if m is not None:
            self._dispatch(m, m.get(35))
        self.store.save()
        while self._queue:
            nxt = self.store.next_target
            for stale in [s for s in self._queue if s < nxt]:
                del self._queue[stale]
            if nxt not in self._queue:
                break
            queued = self._queue.pop(nxt)
            self.store.next_target = nxt + 1
            if queued is not None:
                self._dispatch(queued, queued.get(35))
            self.store.save()

    def _dispatch(self, m: simplefix.FixMessage, mtype: bytes) -> None:
        if mtype == b"0":
            if self._test_req is not None and m.get(112) == self._test_req.encode():
                self.counters["test_request_answered"] += 1
                self._test_req = None
                self._probing = False
        elif mtype == b"1":
            self._send(b"0", [(112, (m.get(112) or b"").decode())])
        elif mtype == b"2":
            self._answer_resend(m)
        elif mtype == b"3":
            self.counters["rejects"] += 1
            self._report("reject", "FIX Reject received", ref_seq=m.get(45), reason=m.get(373),
                         text=(m.get(58) or b"").decode(errors="replace"))
        elif mtype == b"4":  # gap fill, in sequence
            new = int(m.get(36) or 0)
            if new > self.store.next_target:
                self.store.next_target = new
            self.counters["gap_fills"] += 1
        elif mtype == b"5":
            if self.state == "logout_sent":
                self._disconnect("logout confirmed", None)
            else:
                self._logout_reply_and_close(m)
        elif mtype != b"A":
            self._app.append(m)

    def _answer_resend(self, m: simplefix.FixMessage) -> None:
        """Gap-fill the whole range: admin messages are never resent, and a stale market-data
        request or order must not be replayed either (the application re-issues what it needs)."""
        begin = int(m.get(7) or 1)
        self.counters["resend_requests"] += 1
        if begin >= self.store.next_sender:
            return
        self._send(b"4", [(123, "Y"), (36, self.store.next_sender)], seq=begin, poss_dup=True)

    def _on_reset(self, m: simplefix.FixMessage) -> None:
        new = int(m.get(36) or 0)
        if new < self.store.next_target:
            self._send(b"3", [(45, int(m.get(34))), (373, 5), (58, f"NewSeqNo {new} lowers the sequence")])
            self._bad("seq_reset_lower", "SequenceReset-Reset to a lower number rejected", new=new)
            return
        self.counters["seq_resets"] += 1
        self.store.next_target = new
        self._queue = {s: q for s, q in self._queue.items() if s >= new}
        self.store.save()

    # -- outbound and endings --------------------------------------------------------------
    def _send(self, msg_type: bytes, fields, seq: int | None = None, poss_dup: bool = False) -> int:
        now = dt.datetime.fromtimestamp(self.clock.time_ns() / 1e9, dt.timezone.utc)
        stamp = now.strftime("%Y%m%d-%H:%M:%S.%f")[:-3]
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.cfg.sender_comp_id, header=True)
        m.append_pair(56, self.cfg.target_comp_id, header=True)
        number = self.store.next_sender if seq is None else seq
        m.append_pair(34, number, header=True)
        if poss_dup:
            m.append_pair(43, "Y", header=True)
            m.append_pair(122, stamp, header=True)
        m.append_pair(52, stamp, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        self._out.append(m.encode())
        if seq is None:
            self.store.next_sender += 1
            self.store.save()
        self._last_sent = self.clock.monotonic()
        self.counters[f"out_{msg_type.decode()}"] += 1
        return number

    def _logout_reply_and_close(self, m) -> None:
        text = (m.get(58) or b"").decode(errors="replace") if m is not None else ""
        self._send(b"5", [])
        self._disconnect(f"counterparty logged out: {text}" if text else "counterparty logged out", None)

    def _logout_and_close(self, text: str, kind: str) -> None:
        self._send(b"5", [(58, text)])
        self._disconnect(text, kind)

    def _disconnect(self, reason: str, kind: str | None) -> None:
        if kind:
            self._bad(kind, f"FIX session closing: {reason}")
        self.disconnect_reason = reason
        self._set_state("closed")

    def _set_state(self, state: str) -> None:
        self.state, self._state_at = state, self.clock.monotonic()

    def _bad(self, kind: str, message: str, **context) -> None:
        self.counters[kind] += 1
        self._report(kind, message, **context)
