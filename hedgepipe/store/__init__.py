"""The operational data store behind store-writer: Redis live state and streams.

:mod:`.redis_state` has the key schema and the batched, pipelined writer (backlog and
reconnect); :mod:`.embedded` runs the embedded redis-server used when no Redis URL is
configured. Readers use :mod:`hedgepipe.state`. See docs/store-writer.md.
"""
