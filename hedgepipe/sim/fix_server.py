"""deribit-sim over FIX 4.4: a small acceptor serving the same market as the WebSocket server.

What it speaks (Deribit's layout, see docs/fix.md and docs/simulator.md):

- Logon(A) checked the way Deribit does: Username(553) is the client id and Password(554) is
  base64(sha256(RawData(96) + client_secret)); anything else gets a Logout(5) with a Text(58)
  and the connection is closed. ResetSeqNumFlag(141)=Y restarts both sides at 1.
- Heartbeat(0), TestRequest(1) (answered), ResendRequest(2) (one SequenceReset-GapFill: market
  data is never replayed), SequenceReset(4), Logout(5).
- SecurityListRequest(x) -> SecurityList(y); MarketDataRequest(V) -> a W snapshot per symbol,
  then X increments (book levels and trades) as the market moves; Y for an unknown symbol.

Sequence numbers are kept per SenderCompID for the server's life, like a venue's. Incoming
numbers are checked leniently (a jump forward is accepted): this is a market-data source for
tests, the client's own session rules are tested against QuickFIX.
Subscriptions ride on the SimServer's fan-out: a connection registers as a subscriber of
``book.X``/``trades.X`` keys, so faults such as ``--skip-change`` apply to FIX too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import msgspec
import simplefix

from ..venues.deribit.fix_wire import BadFrame, FixFramer, logon_password
from .auth import Auth
from .market import LiveMarket

log = logging.getLogger("hedgepipe.sim.fix")
SERVER_ID = "DERIBITSERVER"
_ACTIONS = {"new": 0, "change": 1, "delete": 2}
_KINDS = {"option": "OPT", "future": "FUT", "spot": "FXSPOT"}
_decode = msgspec.json.decode


class FixServer:
    def __init__(self, sim, auth: Auth | None = None):
        self.sim = sim  # the SimServer: its market and its subscriber fan-out
        self.auth = auth or sim.auth
        self.seqs: dict[str, list[int]] = {}  # SenderCompID -> [next out, next in]
        self.port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[FixClient] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._connection, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        for client in list(self._clients):
            client.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader, writer) -> None:
        client = FixClient(self, writer)
        self._clients.add(client)
        beat = asyncio.get_running_loop().create_task(client.heartbeats())
        try:
            while not client.closed and (data := await reader.read(1 << 16)):
                client.receive(data)
        except (ConnectionError, OSError):
            pass
        finally:
            beat.cancel()
            client.close()
            self._clients.discard(client)


class FixClient:
    """One FIX connection; also a subscriber the SimServer fans JSON notifications out to."""

    def __init__(self, server: FixServer, writer):
        self.server = server
        self.writer = writer
        self.subs: dict[str, set[str]] = {}  # SimServer fan-out: key -> channel names
        self.comp_id = ""
        self.seq: list[int] = [1, 1]
        self.heartbeat_s = 30.0
        self.logged_on = self.closed = False
        self._framer = FixFramer()
        self._parser = simplefix.FixParser()
        self._last_sent = 0.0

    # ---- inbound --------------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        for frame in self._framer.feed(data):
            if isinstance(frame, BadFrame):
                log.warning("FIX frame dropped", extra={"kind": frame.kind, "detail": frame.detail})
                continue
            self._parser.append_buffer(frame)
            m = self._parser.get_message()
            if m is not None and not self.closed:
                self._on_message(m)

    def _on_message(self, m: simplefix.FixMessage) -> None:
        mtype, seq = m.get(35), int(m.get(34) or 0)
        if not self.logged_on:
            if mtype != b"A":
                return self.close()
            return self._logon(m, seq)
        if seq < self.seq[1] and m.get(43) != b"Y":
            self.send(b"5", [(58, f"MsgSeqNum too low, expecting {self.seq[1]} but received {seq}")])
            return self.close()
        if mtype == b"4":
            self.seq[1] = max(int(m.get(36) or 0), self.seq[1])
            return
        if seq < self.seq[1]:
            return  # a possible duplicate we already have
        self.seq[1] = seq + 1
        if mtype == b"1":
            self.send(b"0", [(112, (m.get(112) or b"").decode())])
        elif mtype == b"2":
            begin = int(m.get(7) or 1)
            if begin < self.seq[0]:
                self.send(b"4", [(123, "Y"), (36, self.seq[0])], seq=begin)
        elif mtype == b"5":
            self.send(b"5", [])
            self.close()
        elif mtype == b"x":
            self._security_list(m)
        elif mtype == b"V":
            self._market_data_request(m)

    def _logon(self, m: simplefix.FixMessage, seq: int) -> None:
        auth = self.server.auth
        self.comp_id = (m.get(49) or b"").decode()
        raw, password = (m.get(96) or b"").decode(), (m.get(554) or b"").decode()
        self.seq = self.server.seqs.get(self.comp_id) or [1, 1]
        if ((m.get(553) or b"").decode() != auth.client_id or not raw
                or password != logon_password(raw, auth.client_secret)):
            log.warning("FIX logon refused", extra={"comp_id": self.comp_id})
            self.send(b"5", [(58, "invalid_credentials")], seq=self.seq[0])  # numbers not consumed
            return self.close()
        reset = m.get(141) == b"Y"
        if reset:
            self.seq = [1, 1]
        self.server.seqs[self.comp_id] = self.seq
        self.seq[1] = max(self.seq[1], seq) + 1
        self.heartbeat_s = max(float(m.get(108) or 30), 0.1)
        self.logged_on = True
        log.info("FIX client logged on", extra={"comp_id": self.comp_id, "reset": reset})
        self.send(b"A", [(98, 0), (108, m.get(108) or b"30")] + ([(141, "Y")] if reset else []))

    # ---- application ------------------------------------------------------------------------
    def _security_list(self, m: simplefix.FixMessage) -> None:
        market = self.server.sim.market
        currency = (m.get(15) or b"").decode()
        listed = [i for c in ([currency] if currency else market.currencies) for i in market.instruments(c)]
        fields: list = [(320, (m.get(320) or b"").decode()), (322, f"y{self.seq[0]}"), (560, 0),
                        (146, len(listed))]
        for inst in listed:
            fields += [(55, inst["instrument_name"]), (167, _KINDS.get(inst["kind"], inst["kind"].upper())),
                       (15, inst["base_currency"]), (969, inst["tick_size"]),
                       (562, inst["min_trade_amount"]), (231, inst["contract_size"])]
            if inst.get("settlement_period") != "perpetual":
                day = dt.datetime.fromtimestamp(inst["expiration_timestamp"] / 1000, dt.timezone.utc)
                fields.append((541, day.strftime("%Y%m%d")))
            if inst["kind"] == "option":
                fields += [(201, 1 if inst["option_type"] == "call" else 0), (202, inst["strike"])]
        self.send(b"y", fields)

    def _market_data_request(self, m: simplefix.FixMessage) -> None:
        sim, req_id = self.server.sim, (m.get(262) or b"").decode()
        mode = m.get(263) or b"1"
        symbols = [v.decode() for t, v in m.pairs if t == b"55"]
        for name in symbols:
            if not isinstance(sim.market, LiveMarket) or sim.market.instrument(name) is None:
                why = "unknown symbol" if isinstance(sim.market, LiveMarket) else "replay is WebSocket only"
                self.send(b"Y", [(262, req_id), (281, 0), (58, f"{name}: {why}")])
                continue
            keys = (f"book.{name}", f"trades.{name}")
            if mode == b"2":
                for key in keys:
                    self._unsubscribe(key)
                continue
            snap = sim.market.book_snapshot(name)
            entries = [(kind, p, a) for kind, side in ((0, "bids"), (1, "asks")) for _, p, a in snap[side]]
            fields: list = [(55, name), (262, req_id), (268, len(entries))]
            for kind, price, amount in entries:
                fields += [(269, kind), (270, price), (271, amount)]
            self.send(b"W", fields)
            if mode == b"1":  # snapshot + updates: ride on the SimServer's fan-out
                for key in keys:
                    self.subs[key] = {f"{key}.raw"}
                    sim.subscribers.setdefault(key, set()).add(self)

    def send_text(self, text: str) -> None:
        """A JSON notification from the SimServer's fan-out, sent on as an X."""
        params = _decode(text)["params"]
        data = params["data"]
        name = params["channel"].split(".")[1]
        fields: list = [(55, name)]
        if params["channel"].startswith("book."):
            entries = [(kind, lv) for kind, side in ((0, "bids"), (1, "asks")) for lv in data[side]]
            fields.append((268, len(entries)))
            for kind, (action, price, amount) in entries:
                fields += [(279, _ACTIONS[action]), (269, kind), (270, price), (271, amount)]
        else:
            fields.append((268, len(data)))
            for t in data:
                fields += [(279, 0), (269, 2), (270, t["price"]), (271, t["amount"]),
                           (54, 1 if t["direction"] == "buy" else 2), (100009, t["trade_id"]),
                           (272, t["timestamp"])]
        self.send(b"X", fields)

    # ---- outbound and endings -----------------------------------------------------------------
    def send(self, msg_type: bytes, fields, seq: int | None = None) -> None:
        if self.closed:
            return
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]
        m = simplefix.FixMessage()
        for tag, value in ((8, "FIX.4.4"), (35, msg_type), (49, SERVER_ID), (56, self.comp_id),
                           (34, self.seq[0] if seq is None else seq)):
            m.append_pair(tag, value, header=True)
        if msg_type == b"4":
            m.append_pair(43, "Y", header=True)
        m.append_pair(52, now, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        if seq is None:
            self.seq[0] += 1
        self.writer.write(m.encode())
        self._last_sent = asyncio.get_running_loop().time()

    async def heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(min(self.heartbeat_s, 1.0) / 2)
            if self.logged_on and loop.time() - self._last_sent >= self.heartbeat_s:
                self.send(b"0", [])

    def _unsubscribe(self, key: str) -> None:
        self.subs.pop(key, None)
        self.server.sim.subscribers.get(key, set()).discard(self)

    def close(self) -> None:
        if self.closed:
            return
        for key in list(self.subs):
            self._unsubscribe(key)
        self.closed = True
        self.writer.close()
