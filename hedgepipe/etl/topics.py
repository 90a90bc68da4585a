"""etl-filter's state: per topic (found with one dict lookup per message), per instrument and
per upstream publisher (its clock), every table bounded (beyond ``max_entries`` the oldest entry
is forgotten and counted)."""

from __future__ import annotations

from hedgepipe.messages import Instrument

from .dedup import NEW, RecentIds, SeqWindow
from .spike import SpikeRule
from .universe import InstrumentState, Universe, index_base
from .watermark import SourceClock

#: The md kinds etl-filter takes (``md.<kind>.<venue>.<name>``).
KINDS = frozenset(("book", "ticker", "trade", "index", "instrument"))
#: Upstream publishers remembered per topic; a 17th forgets the others (bounded memory).
MAX_SRCS_PER_TOPIC = 16


class TopicState:
    """Everything one input topic needs."""

    __slots__ = ("kind", "handle", "out", "venue", "name", "inst", "seqs", "window", "marked",
                 "trade_ids", "allowed", "peers", "last_bids", "last_asks", "checked_with")

    def __init__(self, kind: str, out: str, venue: str, name: str):
        self.kind = kind              # "" for a topic etl-filter does not take
        self.handle = None            # the daemon's handler for the kind
        self.out = out                # the clean.* topic
        self.venue = venue
        self.name = name              # instrument or index name (the topic's last segment)
        self.inst: InstrumentState | None = None
        self.seqs: dict[str, SeqWindow] = {}  # upstream src -> its seq window
        self.window = None            # spike window (books, tickers, indexes)
        self.marked = False           # books: a stale clean book went out, no good book since
        self.trade_ids: RecentIds | None = None
        self.allowed = True           # indexes: the base currency is in the universe
        self.peers: dict[str, tuple[float, int]] | None = None  # indexes: each source's latest
        # books: the sides of the last clean book, and the definition they were checked with
        self.last_bids: list | None = None
        self.last_asks: list | None = None
        self.checked_with: Instrument | None = None

    def observe(self, src: str, seq: int, ts_recv: int, width: int, mask: int) -> int:
        """dedup NEW, DUPLICATE, RESET or BEHIND for this topic's frame (``src``, ``seq``,
        ``ts_recv``)."""
        window = self.seqs.get(src)
        if window is None:
            if len(self.seqs) >= MAX_SRCS_PER_TOPIC:
                self.seqs.clear()
            self.seqs[src] = SeqWindow(seq, ts_recv)
            return NEW
        return window.observe(seq, ts_recv, width, mask)


class Registry:
    """Topics, instruments (by venue and name), index peers (by index name) and upstream
    publishers' clocks (by ``src``)."""

    def __init__(self, universe: Universe, spikes: SpikeRule | None, trade_id_memory: int,
                 max_entries: int):
        self.universe = universe
        self.spikes = spikes
        self.trade_id_memory = trade_id_memory
        self.max_entries = max_entries
        self.topics: dict[str, TopicState] = {}
        self.instruments: dict[tuple[str, str], InstrumentState] = {}
        #: index name -> source -> (latest value that passed the value rules, its ts_event)
        self.peers: dict[str, dict[str, tuple[float, int]]] = {}
        #: upstream src -> its watermark (hedgepipe.etl.watermark)
        self.clocks: dict[str, SourceClock] = {}
        self.evicted = 0

    def topic(self, topic: str) -> TopicState:
        """The new state of a topic not seen before."""
        parts = topic.split(".", 3)
        kind = parts[1] if len(parts) > 2 and parts[0] == "md" and parts[1] in KINDS else ""
        st = TopicState(kind, "clean." + topic[3:], parts[2] if kind else "",
                        parts[3] if len(parts) > 3 else "")
        if kind in ("book", "ticker", "index") and self.spikes is not None:
            st.window = self.spikes.window()
        if kind == "trade":
            st.trade_ids = RecentIds(self.trade_id_memory)
        if kind == "index":
            st.allowed = self.universe.currency_allowed(index_base(st.name))
            st.peers = self.peers.get(st.name)
            if st.peers is None:
                st.peers = self._remember(self.peers, st.name, {})
        return self._remember(self.topics, topic, st)

    def clock(self, src: str) -> SourceClock:
        """The new clock of a publisher not seen before."""
        return self._remember(self.clocks, src, SourceClock())

    def link(self, st: TopicState) -> InstrumentState | None:
        """The topic's instrument, once its definition is known."""
        st.inst = self.instruments.get((st.venue, st.name))
        return st.inst

    def register(self, inst: Instrument) -> InstrumentState:
        """Take a definition (new, or an update: the state is changed in place, so topics that
        hold it see the change)."""
        key = (inst.venue, inst.name)
        ist = self.instruments.get(key)
        if ist is None:
            ist = self._remember(self.instruments, key, InstrumentState())
        return self.universe.judge(inst, ist)

    def _remember(self, table: dict, key, value):
        table[key] = value
        if len(table) > self.max_entries:
            del table[next(iter(table))]
            self.evicted += 1
        return value
