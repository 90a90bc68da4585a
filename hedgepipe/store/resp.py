"""A minimal RESP2 connection for store-writer's write path: send packed commands, count replies.

redis-py parses each reply through several Python layers (~3 µs a reply, one reply per
XADD); store-writer only needs to know which commands Redis refused, so this connection reads
the replies of a whole pipeline from one buffer and returns the errors (docs/store-writer.md
has the profile). The URL is parsed by redis-py (``redis://``, ``rediss://``, ``unix://``,
user, password, db), and the handshake is the usual one: AUTH, SELECT, CLIENT SETNAME.
"""

from __future__ import annotations

import socket
import ssl

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url


SEND_BUFFER_BYTES = 4 << 20


class RespError(OSError):
    """The connection failed or the server spoke something that is not a reply we expect."""


def pack(*args: bytes | str | int) -> bytes:
    """One command as RESP text."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class RespConnection:
    """One socket to Redis. No I/O until :meth:`connect`; every I/O error raises RespError."""

    def __init__(self, url: str, timeout_s: float, client_name: str = ""):
        opts = parse_url(url)
        self.path = opts.get("path") if opts.get("connection_class") is UnixDomainSocketConnection else None
        self.address = (opts.get("host", "localhost"), int(opts.get("port", 6379)))
        self.tls = opts.get("connection_class") is SSLConnection
        self.db = int(opts.get("db", 0) or 0)
        self.username = opts.get("username")
        self.password = opts.get("password")
        self.client_name = client_name
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._pos = 0

    def connect(self) -> None:
        """Connect and shake hands; raises RespError (with the server's refusal, if any)."""
        self.close()
        try:
            if self.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout_s)
                sock.connect(self.path)
            else:
                sock = socket.create_connection(self.address, timeout=self.timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls:
                    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.address[0])
            # Room for a whole pipeline, so sending one returns at once and Redis executes it
            # while the caller reads new frames (the kernel caps it at net.core.wmem_max).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError as exc:
            raise RespError(f"connect: {exc}") from None
        self._sock = sock
        hello = []
        if self.password is not None:
            hello.append(pack("AUTH", *([self.username] if self.username else []), self.password))
        if self.db:
            hello.append(pack("SELECT", self.db))
        if self.client_name:
            hello.append(pack("CLIENT", "SETNAME", self.client_name))
        hello.append(pack("PING"))
        self.send(b"".join(hello))
        errors = self.read_replies(len(hello))
        if errors:
            self.close()
            raise RespError(f"handshake refused: {errors[0][1]}")

    def send(self, data: bytes) -> None:
        if self._sock is None:
            raise RespError("not connected")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise RespError(f"send: {exc}") from None

    def read_replies(self, n: int) -> list[tuple[int, str]]:
        """Read ``n`` replies; return ``(index, error text)`` of each error reply."""
        errors: list[tuple[int, str]] = []
        buf = self._buf
        pos = self._pos
        i = 0
        try:
            while i < n:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    buf, pos = self._fill(buf, pos)
                    continue
                kind = buf[pos]
                if kind == 36:  # '$' bulk string: an XADD's entry id
                    size = int(buf[pos + 1:end])
                    nxt = end + 2 if size < 0 else end + size + 4
                    if nxt > len(buf):
                        buf, pos = self._fill(buf, pos)
                        continue
                elif kind == 58 or kind == 43:  # ':' integer (HSET), '+' status (PING, SETNAME)
                    nxt = end + 2
                elif kind == 45:  # '-' error: WRONGTYPE, OOM, ...
                    errors.append((i, buf[pos + 1:end].decode(errors="replace")))
                    nxt = end + 2
                else:
                    raise RespError(f"unexpected reply type {bytes([kind])!r}")
                pos = nxt
                i += 1
        except (RespError, ValueError) as exc:
            self.close()
            raise RespError(f"read: {exc}") from None
        if pos == len(buf):  # all consumed: start the next read at the buffer's start
            buf.clear()
            pos = 0
        self._buf, self._pos = buf, pos
        return errors

    def _fill(self, buf: bytearray, pos: int) -> tuple[bytearray, int]:
        if self._sock is None:
            raise RespError("not connected")
        if pos:
            del buf[:pos]
        try:
            chunk = self._sock.recv(1 << 18)
        except OSError as exc:
            raise RespError(str(exc)) from None
        if not chunk:
            raise RespError("connection closed by the server")
        buf += chunk
        return buf, 0

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._buf = bytearray()
        self._pos = 0
