"""The table ``make bench`` prints, the targets it checks (and only reports), and JSON."""

from __future__ import annotations

import json

from .chain import Outcome

#: The issue's targets: (what, check) — measured and printed, never asserted.
SAT_RATIO_TARGET = 0.70
P99_TARGET_US = 1000.0
P99_TARGET_RATE = 10_000.0

_COLUMNS = [("path", 8, "<"), ("via", 5, "<"), ("hops", 4, ">"), ("offered", 8, ">"),
            ("sent/s", 8, ">"), ("delivered/s", 11, ">"), ("p50 µs", 8, ">"), ("p99 µs", 8, ">"),
            ("p99.9 µs", 9, ">"), ("max µs", 8, ">"), ("lost", 6, ">"), ("rt drops", 8, ">"),
            ("cpu µs/hop", 10, ">"), ("vs raw", 6, ">")]


def _key(o: Outcome) -> tuple:
    return (o.scenario.transport, o.scenario.hops, o.scenario.rate)


def row(o: Outcome, raw: Outcome | None) -> dict:
    sc, gen, sink = o.scenario, o.gen, o.sink
    span = (gen["end_ns"] - gen["start_ns"]) / 1e9
    ratio = None
    hop_cpu = [v for k, v in o.cpu_s.items() if k.startswith("hop")]
    if raw is not None and raw.sink["delivered_per_s"]:
        ratio = sink["delivered_per_s"] / raw.sink["delivered_per_s"]
    return {"path": sc.path, "transport": sc.transport, "hops": sc.hops,
            "offered_per_s": sc.rate or None, "count": sc.count,
            "sent_per_s": gen["sent"] / span if span > 0 else 0.0,
            "gen_max_late_us": gen["max_late_us"],
            "delivered_per_s": sink["delivered_per_s"], "p50_us": sink["p50_us"],
            "p99_us": sink["p99_us"], "p999_us": sink["p999_us"], "max_us": sink["max_us"],
            "lost": sink["lost"], "dupes": sink["dupes"], "reordered": sink["reordered"],
            "runtime_drops": (sum(c.get("drops", 0) for c in o.hop_counters)
                              if sc.path == "runtime" else None),
            "runtime_gaps": (sum(c.get("gaps", 0) for c in o.hop_counters)
                             if sc.path == "runtime" else None),
            "hop_cpu_us_per_msg": (sum(hop_cpu) / len(hop_cpu) / sc.count * 1e6
                                   if hop_cpu else None),
            "cpu_s": o.cpu_s, "vs_raw": ratio}


def rows(outcomes: list[Outcome]) -> list[dict]:
    raw = {_key(o): o for o in outcomes if o.scenario.path == "raw"}
    return [row(o, raw.get(_key(o)) if o.scenario.path == "runtime" else None) for o in outcomes]


def _cells(r: dict) -> list[str]:
    def num(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)
    return [r["path"], r["transport"], str(r["hops"]),
            "sat" if r["offered_per_s"] is None else num(r["offered_per_s"]),
            num(r["sent_per_s"]), num(r["delivered_per_s"]), num(r["p50_us"]), num(r["p99_us"]),
            num(r["p999_us"]), num(r["max_us"]), num(r["lost"]), num(r["runtime_drops"]),
            num(r["hop_cpu_us_per_msg"], "{:.1f}"), num(r["vs_raw"], "{:.0%}")]


def table(rs: list[dict]) -> str:
    head = "  ".join(f"{name:{align}{width}}" for name, width, align in _COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rs:
        lines.append("  ".join(f"{cell:{align}{width}}"
                               for cell, (_, width, align) in zip(_cells(r), _COLUMNS)))
    return "\n".join(lines)


def targets(rs: list[dict]) -> list[str]:
    """One line per target that the runs measured: the figure and met / NOT met."""
    out = []
    for r in rs:
        if r["path"] != "runtime":
            continue
        where = f"{r['transport']}"
        if r["hops"] == 1 and r["offered_per_s"] is None and r["vs_raw"] is not None:
            ok = r["vs_raw"] >= SAT_RATIO_TARGET
            out.append(f"1 runtime hop >= {SAT_RATIO_TARGET:.0%} of raw at saturation ({where}): "
                       f"{r['vs_raw']:.0%} — {'met' if ok else 'NOT met'}")
        if r["hops"] == 3 and r["offered_per_s"] == P99_TARGET_RATE:
            ok = r["p99_us"] <= P99_TARGET_US and r["lost"] == 0
            out.append(f"3-hop p99 <= {P99_TARGET_US:,.0f} µs at {P99_TARGET_RATE:,.0f} msg/s "
                       f"({where}): {r['p99_us']:,.0f} µs — {'met' if ok else 'NOT met'}")
    return out


def dump_json(path: str, meta: dict, rs: list[dict]) -> None:
    with open(path, "w") as fh:
        json.dump({"meta": meta, "rows": rs}, fh, indent=1)
