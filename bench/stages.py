"""``python -m bench.stages``: the data stages' throughput beside the foundation's raw ceiling.

The raw ceiling is the foundation bench's raw hop (``bench.rawhop``: a bare pyzmq + msgspec
loop that decodes and re-encodes each frame, no runtime) at saturation over ipc, measured in
this same run so both figures see the same machine load. Each stage is measured on one core
as its own bench does it (``bench.etl_filter``, ``bench.store_writer``); the ratio says how
much of what a bare hop can move the stage moves with its real work done.
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


def etl_rates(count: int = 100_000) -> tuple[float, float]:
    """(handler msg/s with every rule on, whole frame msg/s: decode + rules + encode)."""
    logging.getLogger("hedgepipe").setLevel(logging.CRITICAL)
    stream = etl_filter.make_stream(count)
    frames = [(t.encode(), messages.encode(m)) for t, m in stream]
    handler_s, _ = etl_filter._best(2, lambda: etl_filter.run_handler_only(
        [(t.decode(), messages.decode(t.decode(), p)) for t, p in frames]))
    frame_s, _ = etl_filter._best(2, etl_filter.run_frames, frames)
    return len(frames) / handler_s, len(frames) / frame_s


def main(argv=None) -> int:
    try:
        raw = raw_ceiling()
    except RunError as exc:
        print(f"raw ceiling run failed: {exc}", file=sys.stderr)
        return 1
    handler, frame = etl_rates()
    store = store_writer.measure_service(store_writer.frame_mix(), repeat=3)["msg_per_s"]
    print(f"data stages vs the raw ceiling (raw ipc hop at saturation, this run: {raw:,.0f} msg/s)")
    print(f"{'stage':<52} {'msg/s':>10} {'target':>8} {'x raw':>6}")
    for label, rate, target in (
            ("etl-filter handler, all rules on (one core)", handler, etl_filter.TARGET_MSG_S),
            ("etl-filter frame: decode + rules + encode", frame, None),
            ("store-writer into Redis + journal (one core)", store, store_writer.TARGET_MSG_PER_S)):
        met = "" if target is None else ("met" if rate >= target else "NOT met")
        print(f"{label:<52} {rate:>10,.0f} {f'{target // 1000}k' if target else '':>8} "
              f"{rate / raw:>6.2f} {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
