"""bus-relay: forward frames from its inputs to its output, byte for byte.

It joins buses: every daemon's ipc endpoint onto one tcp endpoint for a remote ``zmq-tap``,
or a pipe onto a socket (``feed ... --out - | bus-relay --in - --out tcp://...``). Frames are
not decoded, so the original ``src``/``seq`` reach the far side and gaps stay detectable
there; bad framing (one-part messages, broken pipe streams) is still counted and dropped.
"""

from __future__ import annotations

from ..cli import daemon_command
from ..runtime import RawFrame, Service


class RelayService(Service):
    name = "bus-relay"
    summary = ("Forward frames from --in endpoints to --out unchanged (joins ipc to tcp, "
               "pipes to sockets). Topic prefixes from --topic filter what is forwarded.")
    decode_inputs = False
    republishes_inputs = True

    def on_message(self, topic: bytes, payload: bytes):
        return (RawFrame(topic, payload),)


main = daemon_command(RelayService)
