"""A daemon for tests: republishes every message it decodes (new src/seq, same timestamps).

A book whose instrument is ``BOOM`` makes the handler raise, to prove a handler bug is
counted and the daemon goes on.
"""

import time

from hedgepipe.cli import daemon_command
from hedgepipe.config import DaemonConfig
from hedgepipe.runtime import Service


class EchoConfig(DaemonConfig):
    #: Work per message, to make a daemon slow on purpose (drain tests).
    delay_ms: float = 0.0


class EchoService(Service):
    name = "echo"
    summary = "Test daemon: republish every decoded message."
    Config = EchoConfig

    def on_message(self, topic, msg):
        if self.config.delay_ms:
            # Simulated work (CPU busy until a deadline), so a drain has frames queued to prove.
            busy_until = time.monotonic() + self.config.delay_ms / 1000
            while time.monotonic() < busy_until:
                pass
        if getattr(msg, "instrument", None) == "BOOM":
            raise ValueError("BOOM instrument")
        if topic.startswith("hb."):
            return ()
        self.stats["echoed"] = self.stats.get("echoed", 0) + 1
        return ((topic, msg),)


main = daemon_command(EchoService)

if __name__ == "__main__":
    main()
