"""bench-passthrough: the runtime hop the benchmark measures.

A :class:`~hedgepipe.runtime.Service` whose handler returns its input: the runtime decodes
and validates each frame, tracks input gaps and lag, and restamps ``src``/``seq`` on the way
out while ``ts_event``/``ts_recv`` stay those of the input (the runtime only fills them when
they are zero), so the sink measures the whole chain from the generator's stamp.

``python -m bench.passthrough --in X --out Y --topic md.book --config FILE``
"""

from __future__ import annotations

from hedgepipe.cli import daemon_command
from hedgepipe.runtime import Service


class PassthroughService(Service):
    name = "bench-passthrough"
    summary = "Decode, validate and re-publish each frame with this hop's src/seq (benchmark hop)."

    def on_message(self, topic: str, msg):
        return ((topic, msg),)


main = daemon_command(PassthroughService)

if __name__ == "__main__":
    main()
