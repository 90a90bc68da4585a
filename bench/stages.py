"""``python -m bench.stages``: the data stages' throughput beside two raw ceilings.

Each stage is measured in process on one core, as its own bench does it (``bench.etl_filter``,
``bench.store_writer``): its real work per frame, without sockets. Two ceilings, measured in
this same run so they see the same machine load:

- the foundation bench's raw hop (``bench.rawhop``: a bare pyzmq + msgspec process that
  decodes and re-encodes each frame between ipc sockets) at saturation. The ratio says
  whether the stage's work or the hop around it limits a daemon: above 1, the stage's own
  work is cheaper than moving the frame through a socket hop.
- the in-process codec alone (decode + restamp + encode, no rules, no sockets): like for like
  with the stage figures; the ratio is the share of a bare codec's rate the stage keeps.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from hedgepipe import messages
from hedgepipe.config import RuntimeConfig

from . import etl_filter, store_writer
from .chain import Chain, RunError, Scenario

RAW_FRAMES = 60_000


def raw_ceiling(transport: str = "ipc") -> float:
    """Frames per second through one raw hop at saturation (the foundation bench's row)."""
    work = Path(tempfile.mkdtemp(prefix="hpst", dir="/tmp"))
    chain = Chain(Scenario("raw", transport, 1, 0, RAW_FRAMES), work, RuntimeConfig().sndhwm, None)
    try:
        return chain.run().sink["delivered_per_s"]
    finally:
        chain.stop()
        shutil.rmtree(work, ignore_errors=True)


def etl_rates(count: int = 100_000) -> tuple[float, float, float]:
    """msg/s of etl-filter's handler (every rule on), of its whole frame path (decode + rules +
    encode), and of the bare codec on the same frames."""
    logging.getLogger("hedgepipe").setLevel(logging.CRITICAL)
    stream = etl_filter.make_stream(count)
    frames = [(t.encode(), messages.encode(m)) for t, m in stream]
    handler_s, _ = etl_filter._best(2, lambda: etl_filter.run_handler_only(
        [(t.decode(), messages.decode(t.decode(), p)) for t, p in frames]))
    frame_s, _ = etl_filter._best(2, etl_filter.run_frames, frames)
    codec_s, _ = etl_filter._best(2, etl_filter.run_raw, frames)
    return len(frames) / handler_s, len(frames) / frame_s, len(frames) / codec_s


def main(argv=None) -> int:
    try:
        raw = raw_ceiling()
    except RunError as exc:
        print(f"raw ceiling run failed: {exc}", file=sys.stderr)
        return 1
    handler, frame, codec = etl_rates()
    store = store_writer.measure_service(store_writer.frame_mix(), repeat=3)["msg_per_s"]
    print(f"raw ceilings, this run: ipc hop (foundation bench, raw pyzmq + msgspec process, "
          f"saturation) {raw:,.0f} msg/s; in-process codec (decode + restamp + encode) "
          f"{codec:,.0f} msg/s")
    print(f"{'stage (in process, one core)':<46} {'msg/s':>10} {'target':>7} {'/ipc hop':>9} "
          f"{'/codec':>7}")
    for label, rate, target in (
            ("etl-filter handler, all rules on", handler, etl_filter.TARGET_MSG_S),
            ("etl-filter frame: decode + rules + encode", frame, None),
            ("store-writer into Redis + journal", store, store_writer.TARGET_MSG_PER_S)):
        met = "" if target is None else (" met" if rate >= target else " NOT met")
        print(f"{label:<46} {rate:>10,.0f} {f'{target // 1000}k' if target else '-':>7} "
              f"{rate / raw:>9.2f} {rate / codec:>7.2f}{met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
