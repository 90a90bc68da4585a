"""deribit-sim: a local server speaking Deribit's JSON-RPC 2.0 over WebSocket.

It stands in for Deribit in ``make run`` and in the tests. The server (``server.py``,
``session.py``, ``methods.py``) knows the protocol; a market (``market.py``) knows the
instruments, books and prices. Markets: a synthetic one generated here (``synthetic.py``,
the default), a real chain animated with Black-76 (``chain.py``), or a recording replayed
as it was (``replay.py``). Faults for tests and demos live in ``faults.py``.
"""
