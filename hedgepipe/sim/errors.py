"""Deribit's JSON-RPC error codes the simulator answers with."""

from __future__ import annotations

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
TOO_MANY_REQUESTS = 10028
BAD_REQUEST = 11050
INVALID_CREDENTIALS = 13004
UNAUTHORIZED = 13009


class RpcError(Exception):
    """Raised by a method handler; becomes ``{"error": {"code", "message", "data"}}``."""

    def __init__(self, code: int, message: str, data: object = None):
        super().__init__(f"{code} {message}")
        self.code, self.message, self.data = code, message, data

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "data": self.data}


def invalid_param(param: str, reason: str) -> RpcError:
    return RpcError(INVALID_PARAMS, "Invalid params", {"param": param, "reason": reason})
