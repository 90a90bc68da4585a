"""The JSON-RPC methods, one handler each, found by name in ``METHODS``.

A handler is ``handler(session, params) -> result`` and raises ``RpcError`` for a bad request.
Trading (``private/buy|sell|edit|cancel``) is added later the same way: a handler that asks
the market's matching engine, registered with ``@method("private/buy", private=True)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .errors import INVALID_PARAMS, RpcError, UNAUTHORIZED, invalid_param
from .market import INDEX_NAMES, channel_key

if TYPE_CHECKING:
    from .session import Session

VERSION = "1.2.26"
KINDS = ("future", "option", "spot", "future_combo", "option_combo")
Handler = Callable[["Session", dict], object]
METHODS: dict[str, Handler] = {}
PRIVATE: set[str] = set()


def method(name: str, private: bool = False):
    def register(fn: Handler) -> Handler:
        METHODS[name] = fn
        if private:
            PRIVATE.add(name)
        return fn
    return register


def check_access(session: "Session", name: str, params: dict) -> None:
    """Private methods need a live token: the connection's, or an ``access_token`` param."""
    if name in PRIVATE:
        token = params.get("access_token") or session.token
        if not session.server.auth.valid(token):
            raise RpcError(UNAUTHORIZED, "unauthorized")


def _param(params: dict, name: str, kind: type | tuple, default=None, required: bool = False):
    value = params.get(name, default)
    if value is None:
        if required:
            raise invalid_param(name, "value required")
        return None
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise invalid_param(name, "wrong format")
    return value


# ---- session ---------------------------------------------------------------------------------

@method("public/test")
def test(session: "Session", params: dict):
    session.test_answered()
    if params.get("expected_result") == "exception":
        raise RpcError(11094, "internal_server_error")
    return {"version": VERSION}


@method("public/hello")
def hello(session: "Session", params: dict):
    return {"version": VERSION}


@method("public/get_time")
def get_time(session: "Session", params: dict):
    return session.server.market.time_ms()


@method("public/set_heartbeat")
def set_heartbeat(session: "Session", params: dict):
    interval = _param(params, "interval", (int, float), required=True)
    floor = session.server.min_heartbeat_s
    if interval < floor:
        raise invalid_param("interval", f"must be >= {floor:g}")
    session.start_heartbeat(float(interval))
    return "ok"


@method("public/disable_heartbeat")
def disable_heartbeat(session: "Session", params: dict):
    session.stop_heartbeat()
    return "ok"


@method("public/auth")
def auth(session: "Session", params: dict):
    result = session.server.auth.grant(params)
    session.token = result["access_token"]
    return result


@method("private/logout", private=True)
def logout(session: "Session", params: dict):
    session.server.auth.revoke(session.token)
    session.token = None
    return "ok"


@method("private/enable_cancel_on_disconnect", private=True)
@method("private/disable_cancel_on_disconnect", private=True)
def cancel_on_disconnect(session: "Session", params: dict):
    return "ok"


@method("private/get_positions", private=True)
def get_positions(session: "Session", params: dict):
    return []


# ---- market data ---------------------------------------------------------------------------

@method("public/get_instruments")
def get_instruments(session: "Session", params: dict):
    market = session.server.market
    currency = _param(params, "currency", str, required=True)
    kind = _param(params, "kind", str)
    expired = _param(params, "expired", bool, default=False)
    if currency != "any" and currency not in market.currencies:
        raise invalid_param("currency", "wrong format")
    if kind is not None and kind not in KINDS:
        raise invalid_param("kind", "must be one of " + ", ".join(KINDS))
    return market.instruments(currency, kind, expired)


@method("public/get_index_price")
def get_index_price(session: "Session", params: dict):
    name = _param(params, "index_name", str, required=True)
    result = session.server.market.index_price(name) if name in INDEX_NAMES else None
    if result is None:
        raise invalid_param("index_name", "wrong format")
    return result


def _instrument_name(session: "Session", params: dict) -> str:
    name = _param(params, "instrument_name", str, required=True)
    if session.server.market.instrument(name) is None:
        raise invalid_param("instrument_name", "instrument not found")
    return name


@method("public/get_order_book")
def get_order_book(session: "Session", params: dict):
    name = _instrument_name(session, params)
    depth = _param(params, "depth", int)
    if depth is not None and depth < 1:
        raise invalid_param("depth", "must be >= 1")
    result = session.server.market.order_book(name, depth)
    if result is None:
        raise invalid_param("instrument_name", "no book recorded")
    return result


@method("public/ticker")
def ticker(session: "Session", params: dict):
    result = session.server.market.ticker(_instrument_name(session, params))
    if result is None:
        raise invalid_param("instrument_name", "no ticker recorded")
    return result


def _channels(params: dict) -> list[str]:
    channels = _param(params, "channels", list, required=True)
    if not all(isinstance(c, str) for c in channels):
        raise RpcError(INVALID_PARAMS, "Invalid params", {"param": "channels", "reason": "wrong format"})
    return channels


@method("public/subscribe")
@method("private/subscribe", private=True)
def subscribe(session: "Session", params: dict):
    """Accepts the channels this market serves; like Deribit, the result lists only those."""
    market = session.server.market
    accepted = []
    for channel in _channels(params):
        key = channel_key(channel)
        if key is not None and market.has_channel_key(key) and channel not in accepted:
            accepted.append(channel)
    session.after_reply(lambda: session.server.subscribe(session, accepted))
    return accepted


@method("public/unsubscribe")
@method("private/unsubscribe", private=True)
def unsubscribe(session: "Session", params: dict):
    return session.server.unsubscribe(session, _channels(params))


@method("public/unsubscribe_all")
@method("private/unsubscribe_all", private=True)
def unsubscribe_all(session: "Session", params: dict):
    session.server.unsubscribe(session, session.channels())
    return "ok"
