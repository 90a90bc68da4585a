"""Faults the simulator can inject, from CLI flags or set on a running server (tests, demos).

All of them are plain fields: change them on ``server.faults`` while it runs. A fault that
happens once (a drop, a skipped change id) is consumed when it fires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("hedgepipe.sim")


@dataclass
class Faults:
    #: close a connection abruptly (no close frame, like a network cut) after it was sent N messages
    drop_after_messages: int | None = None
    #: ... or once it has been open this many seconds
    drop_after_s: float | None = None
    #: how many connections the drop faults hit, first come first served (0 = every connection)
    drop_connections: int = 1
    #: an instrument name ("*" = any): its Nth book change that has subscribers (counted from
    #: when this is set) is never sent, so the next change's prev_change_id does not match
    skip_change: str | None = None
    skip_change_after: int = 1
    #: every outgoing message waits this long first
    delay_ms: float = 0.0
    #: request ordinals (1-based, per connection) answered with 10028 too_many_requests
    too_many_requests: set[int] = field(default_factory=set)
    #: send no heartbeat test_requests (and so never close a connection for a missing answer)
    no_heartbeats: bool = False
    #: after this many seconds a connection goes silent: no answers, no notifications
    stall_after_s: float | None = None
    # what has fired, for logs and tests
    drops_done: int = 0
    skipped: list[tuple[str, int]] = field(default_factory=list)  # (instrument, change_id)
    _changes_seen: dict[str, int] = field(default_factory=dict)

    def claim_drop(self) -> bool:
        """True when this connection is to be dropped (counts it against ``drop_connections``)."""
        if self.drop_connections and self.drops_done >= self.drop_connections:
            return False
        self.drops_done += 1
        return True

    def skip_this_change(self, data: dict) -> bool:
        """Called once per book change before it is sent to anyone; True = withhold it."""
        target = self.skip_change
        if target is None or data.get("type") != "change":
            return False
        name = data.get("instrument_name", "")
        if target not in ("*", name):
            return False
        seen = self._changes_seen[name] = self._changes_seen.get(name, 0) + 1
        if seen < self.skip_change_after:
            return False
        self.skip_change = None
        self._changes_seen.clear()
        self.skipped.append((name, data["change_id"]))
        log.warning("fault: change withheld", extra={"instrument": name, "change_id": data["change_id"]})
        return True


def parse_request_list(text: str | None) -> set[int]:
    """``"3,7"`` -> {3, 7} (the --too-many-requests flag)."""
    if not text:
        return set()
    return {int(part) for part in text.split(",") if part.strip()}
