"""Where frames come from and go to: ZeroMQ sockets or msgpack streams on stdin/stdout.

``--out ENDPOINT`` binds one publisher; ``--in ENDPOINT...`` connects subscribers; ``-``
means a ``[topic, payload]`` msgpack stream on stdin/stdout (see :mod:`pipeframe`).

The hot path uses blocking sockets driven by a poller with explicit ``send(SNDMORE)`` and
two ``recv()`` calls: measured faster than ``zmq.asyncio`` and ``*_multipart`` (docs/bus.md).

A PUB socket drops silently at its high-water mark. We publish on an XPUB with
``XPUB_NODROP`` instead, so a full queue answers ``EAGAIN`` and the drop is counted.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass

import zmq

from .errors import ConfigError, EndpointError
from .pipeframe import FrameReader, PipeEvent, encode_frame

STDIO = "-"
# Plain ints: pyzmq's enum flags cost about 1 µs per send in `|` and conversion.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
#: Linux limit on a unix socket path (sun_path is 108 bytes with the NUL).
_MAX_IPC_PATH = 107
_RECV_BATCH = 512


def check_endpoint(endpoint: str, *, binding: bool) -> str:
    """Validate an endpoint string early, with an error that says what to fix."""
    if endpoint == STDIO:
        return endpoint
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("ipc", "tcp", "inproc"):
        raise ConfigError(f"endpoint {endpoint!r}: want ipc://PATH, tcp://HOST:PORT, inproc://NAME or -")
    if scheme == "ipc":
        if len(rest.encode()) > _MAX_IPC_PATH:
            raise ConfigError(f"endpoint {endpoint!r}: ipc path is {len(rest)} bytes, the limit is "
                              f"{_MAX_IPC_PATH}; set [runtime] run_dir to a shorter directory")
        directory = os.path.dirname(rest) or "."
        if binding and not os.path.isdir(directory):
            raise ConfigError(f"endpoint {endpoint!r}: directory {directory} does not exist")
    if scheme == "tcp" and ":" not in rest:
        raise ConfigError(f"endpoint {endpoint!r}: tcp endpoints need a port (tcp://127.0.0.1:5555)")
    return endpoint


def _endpoint_error(verb: str, endpoint: str, exc: zmq.ZMQError) -> Exception:
    """A malformed address is a config error (78); a refused one is unavailable (69)."""
    if exc.errno == errno.EINVAL:
        return ConfigError(f"cannot {verb} {endpoint}: malformed endpoint ({exc.strerror})")
    return EndpointError(f"cannot {verb} {endpoint}: {exc.strerror}")


@dataclass(slots=True)
class OutputStats:
    sent: int = 0
    dropped: int = 0  # refused at the high-water mark
    subscribers: int = 0  # current count, from XPUB subscription messages


class ZmqOutput:
    """One bound XPUB socket; ``send`` never blocks and counts what the HWM refuses."""

    def __init__(self, ctx: zmq.Context, endpoint: str, sndhwm: int, linger_ms: int):
        self.endpoint = endpoint
        self.stats = OutputStats()
        self.broken = False  # sockets never lose their reader the way a pipe does
        self._linger_ms = linger_ms
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.LINGER, linger_ms)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise _endpoint_error("bind", endpoint, exc) from None
        # A tcp port of 0 or * picks a free port; callers need the real one.
        self.bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.sock = sock

    def send(self, topic: bytes, payload: bytes) -> bool:
        try:
            self.sock.send(topic, _SNDMORE_NOBLOCK)
        except zmq.Again:
            self.stats.dropped += 1
            return False
        # Both parts of a multipart message are queued atomically once the first is
        # accepted, so the second send cannot be refused.
        self.sock.send(payload, _NOBLOCK)
        self.stats.sent += 1
        return True

    def pump_subscriptions(self) -> None:
        """Read XPUB subscription messages (they would otherwise queue up)."""
        while True:
            try:
                msg = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.stats.subscribers += 1
            elif msg[:1] == b"\x00":
                self.stats.subscribers = max(0, self.stats.subscribers - 1)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close(self._linger_ms)


class PipeOutput:
    """Frames to a binary stream (stdout). Writes are buffered and flushed when idle."""

    def __init__(self, stream=None):
        self.endpoint = STDIO
        self.stats = OutputStats()
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.broken = False  # the reader went away (EPIPE)
        self.sock = None

    def send(self, topic: bytes, payload: bytes) -> bool:
        if self.broken:
            self.stats.dropped += 1
            return False
        frame = encode_frame(topic, payload)
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self.stats.sent += 1
        if self._pending_bytes >= 1 << 16:
            self.flush()
        return True

    def pump_subscriptions(self) -> None:
        pass

    def flush(self) -> None:
        if not self._pending or self.broken:
            return
        data = b"".join(self._pending)
        n = len(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except BrokenPipeError:
            self.broken = True
            self.stats.sent -= n
            self.stats.dropped += n

    def close(self) -> None:
        self.flush()


@dataclass(slots=True)
class BadFrame:
    """A received unit that is not a two-part frame, or a pipe decode event."""

    kind: str
    detail: str


class ZmqInput:
    """One SUB socket connected to every given endpoint, filtered by topic prefixes."""

    def __init__(self, ctx: zmq.Context, endpoints: list[str], topics: list[str], rcvhwm: int):
        self.endpoints = list(endpoints)
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        for prefix in topics or [""]:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        for endpoint in endpoints:
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise _endpoint_error("connect", endpoint, exc) from None
        self.sock = sock
        self.eof = False  # sockets never end

    def missing_ipc_endpoints(self) -> list[str]:
        """ipc endpoints with nothing there yet: worth a warning, not an error."""
        return [e for e in self.endpoints if e.startswith("ipc://") and not os.path.exists(e[6:])]

    def read(self, limit: int = _RECV_BATCH) -> list[tuple[bytes, bytes] | BadFrame]:
        out: list[tuple[bytes, bytes] | BadFrame] = []
        recv = self.sock.recv
        # Zero-copy Frames carry the "more" flag; getsockopt(RCVMORE) would cost ~1.2 µs a part.
        for _ in range(limit):
            try:
                first = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                break
            if not first.more:
                out.append(BadFrame("bad_frame", f"one-part message ({len(first.bytes)} bytes)"))
                continue
            second = recv(0, copy=False)
            if second.more:
                extra = 0
                part = second
                while part.more:
                    part = recv(0, copy=False)
                    extra += 1
                out.append(BadFrame("bad_frame",
                                    f"{2 + extra}-part message on topic {first.bytes[:80]!r}"))
                continue
            out.append((first.bytes, second.bytes))
        return out

    def close(self) -> None:
        self.sock.close(0)


class PipeInput:
    """Frames from a binary stream (stdin), read as they arrive."""

    def __init__(self, max_payload: int, topics: list[str] | None = None, fd: int | None = None):
        self.endpoints = [STDIO]
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.reader = FrameReader(max_payload)
        # A SUB socket filters by prefix in libzmq; on a pipe we do it here, the same way.
        self._prefixes = tuple(t.encode() for t in topics or () if t)
        self.eof = False
        self.sock = None

    def missing_ipc_endpoints(self) -> list[str]:
        return []

    def read(self, limit: int = 0) -> list[tuple[bytes, bytes] | BadFrame]:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return []
            raise
        if not data:
            self.eof = True
            out: list[tuple[bytes, bytes] | BadFrame] = []
            if self.reader.pending:
                out.append(BadFrame("truncated", f"stream ended inside a frame "
                                                 f"({self.reader.pending} bytes unread)"))
            return out
        out = []
        prefixes = self._prefixes
        for item in self.reader.feed(data):
            if isinstance(item, PipeEvent):
                out.append(BadFrame(item.kind, item.detail))
            elif not prefixes or item[0].startswith(prefixes):
                out.append(item)
        return out

    def close(self) -> None:
        pass


def open_output(ctx: zmq.Context, endpoint: str, sndhwm: int, linger_ms: int):
    check_endpoint(endpoint, binding=True)
    if endpoint == STDIO:
        return PipeOutput()
    return ZmqOutput(ctx, endpoint, sndhwm, linger_ms)


def open_inputs(ctx: zmq.Context, endpoints: list[str], topics: list[str], rcvhwm: int,
                max_payload: int) -> list:
    """One PipeInput for ``-`` and one SUB socket for all the other endpoints."""
    for e in endpoints:
        check_endpoint(e, binding=False)
    inputs: list = []
    if STDIO in endpoints:
        inputs.append(PipeInput(max_payload, topics))
    sockets = [e for e in endpoints if e != STDIO]
    if sockets:
        inputs.append(ZmqInput(ctx, sockets, topics, rcvhwm))
    return inputs
