"""Throughput and latency benchmark of the daemon runtime (``make bench``).

A generator, a chain of 1 or 3 pass-through hops and a sink run as separate processes,
over ipc sockets or over pipes. The same chain is run twice: with hops built on the
runtime (:mod:`bench.passthrough`) and with bare pyzmq/msgspec loops (:mod:`bench.rawhop`),
the ceiling the runtime is compared with. ``docs/bench.md`` explains how to read the table.
"""
