"""``public/auth``: client credentials and refresh tokens that expire, as Deribit issues them.

The simulator has one account. Its credentials come from the environment
(``DERIBIT_SIM_CLIENT_ID`` / ``DERIBIT_SIM_CLIENT_SECRET``); the defaults are public on purpose:
it is a local simulator, and a user without an account must be able to log in to it.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Callable

from .errors import RpcError

DEFAULT_CLIENT_ID = "sim-client"
DEFAULT_CLIENT_SECRET = "sim-secret"
SCOPE = "connection mainaccount"


class Auth:
    def __init__(self, client_id: str | None = None, client_secret: str | None = None,
                 expires_in: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.client_id = client_id or os.environ.get("DERIBIT_SIM_CLIENT_ID", DEFAULT_CLIENT_ID)
        self.client_secret = client_secret or os.environ.get("DERIBIT_SIM_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        self.expires_in = expires_in
        self._clock = clock
        self._access: dict[str, float] = {}   # token -> expiry (monotonic)
        self._refresh: dict[str, float] = {}

    def grant(self, params: dict) -> dict:
        grant_type = params.get("grant_type")
        if grant_type == "client_credentials":
            if (params.get("client_id"), params.get("client_secret")) != (self.client_id, self.client_secret):
                raise RpcError(13004, "invalid_credentials")
        elif grant_type == "refresh_token":
            token = params.get("refresh_token")
            if not isinstance(token, str) or self._refresh.pop(token, 0.0) <= self._clock():
                raise RpcError(13009, "unauthorized", {"reason": "invalid or expired refresh_token"})
        else:
            raise RpcError(-32602, "Invalid params", {"param": "grant_type", "reason": "must be one of "
                                                      "client_credentials, refresh_token"})
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        now = self._clock()
        self._access[access] = now + self.expires_in
        self._refresh[refresh] = now + max(self.expires_in * 4, 60.0)
        return {"access_token": access, "expires_in": self.expires_in, "refresh_token": refresh,
                "scope": SCOPE, "token_type": "bearer"}

    def valid(self, token: str | None) -> bool:
        return token is not None and self._access.get(token, 0.0) > self._clock()

    def revoke(self, token: str | None) -> None:
        self._access.pop(token or "", None)
