"""Pure rule code of etl-filter (``hedgepipe.daemons.etl_filter``): no I/O, no clock, no logging.

- :mod:`.rules`: value rules (bad values, level order, ticks) on plain values.
- :mod:`.derive`: derived fields of clean books and tickers (mid, spread, microprice, mid IV).
- :mod:`.spike`: the robust spike rule (rolling median and MAD, confirmation of real jumps).
- :mod:`.dedup`: duplicate detection with bounded memory (sequence windows, recent ids).
- :mod:`.watermark`: the clock, one watermark per upstream publisher, moved by agreement.
- :mod:`.universe`: the instrument universe (currency, kind, expiry window, moneyness band).

docs/etl-filter.md describes every rule, its config keys and counters.
"""
