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
import select
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import Callable

import zmq

from .errors import ConfigError, EndpointError
from .pipeframe import FrameReader, PipeEvent, encode_frame

STDIO = "-"
# Plain ints: pyzmq's enum flags cost about 1 µs per send in `|` and conversion.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
#: Linux limit on a unix socket path (sun_path is 108 bytes with the NUL).
_MAX_IPC_PATH = 107
_RECV_BATCH = 512
#: After the drain deadline, how long a pipe write may still take to finish the frame begun.
_FRAME_GRACE_S = 1.0


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


#: What a publisher does when a subscriber's queue is full ([runtime] when_subscriber_full).
#: "drop": that subscriber misses the frame (it sees a sequence gap and counts it); every
#:         other subscriber still gets it. A stalled zmq-tap cannot starve risk-gate.
#: "refuse": the publisher refuses the frame for everyone and counts it in ``drops``
#:         (XPUB_NODROP). Nothing is lost unseen by the publisher, but one slow
#:         subscriber stops delivery to all.
FULL_POLICIES = ("drop", "refuse")


class ZmqOutput:
    """One bound XPUB socket; ``send`` never blocks. See FULL_POLICIES."""

    def __init__(self, ctx: zmq.Context, endpoint: str, sndhwm: int, linger_ms: int,
                 when_full: str = "drop"):
        if when_full not in FULL_POLICIES:
            raise ConfigError(f"when_subscriber_full = {when_full!r}: want one of {FULL_POLICIES}")
        self.endpoint = endpoint
        self.subscriptions = 0  # topic prefixes subscribed, from XPUB subscription messages
        self.broken = False  # sockets never lose their reader the way a pipe does
        self.pending_bytes = 0  # zmq queues on its own I/O thread: nothing waits here
        self._linger_ms = linger_ms
        if endpoint.startswith("ipc://"):
            _refuse_live_ipc(endpoint)
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.XPUB_NODROP, 1 if when_full == "refuse" else 0)
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
        """False when refused (only with when_full="refuse")."""
        try:
            self.sock.send(topic, _SNDMORE_NOBLOCK)
        except zmq.Again:
            return False
        # Both parts of a multipart message are queued atomically once the first is
        # accepted, so the second send cannot be refused.
        self.sock.send(payload, _NOBLOCK)
        return True

    def pump_subscriptions(self) -> None:
        """Read XPUB subscription messages (they would otherwise queue up)."""
        while True:
            try:
                msg = self.sock.recv(_NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def flush(self, give_up_at: Callable[[], float | None] | None = None) -> int:
        return 0  # zmq queues on its own I/O thread

    def close(self) -> None:
        self.sock.close(self._linger_ms)


def _refuse_live_ipc(endpoint: str) -> None:
    """libzmq silently replaces a live ipc socket file; a second daemon on one endpoint is a bug."""
    path = endpoint[len("ipc://"):]
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return  # a stale file left by a process that died: binding replaces it
    except OSError:
        return  # not a socket we can probe (permissions): let bind decide
    finally:
        probe.close()
    raise EndpointError(f"cannot bind {endpoint}: another process is publishing there")


class PipeOutput:
    """Frames to a binary stream (stdout), buffered and written when the loop goes idle.

    A pipe never drops: a slow reader slows us down (backpressure). But a write must not
    block a stopping daemon forever, so the fd is non-blocking and ``flush`` waits for it to
    become writable, giving up only when ``give_up_at()`` returns a deadline that has passed.
    """

    def __init__(self, fd: int | None = None):
        self.endpoint = STDIO
        self.subscriptions = 1  # whoever reads the pipe
        self.fd = sys.stdout.fileno() if fd is None else fd
        self._pending = bytearray()
        self._frame_ends: list[int] = []  # offsets where each pending frame ends
        self.broken = False  # the reader went away (EPIPE)
        self.sock = None
        mode = os.fstat(self.fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.set_blocking(self.fd, False)

    def send(self, topic: bytes, payload: bytes) -> bool:
        if self.broken:
            return False
        self._pending += encode_frame(topic, payload)
        self._frame_ends.append(len(self._pending))
        return True

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def pump_subscriptions(self) -> None:
        pass

    def flush(self, give_up_at: Callable[[], float | None] | None = None) -> int:
        """Write what is pending. Returns how many frames were lost (reader gone, or gave up)."""
        view = memoryview(self._pending)
        written = 0
        limit = len(view)
        grace_until = None
        try:
            while written < limit:
                try:
                    written += os.write(self.fd, view[written:limit])
                except BlockingIOError:
                    deadline = give_up_at() if give_up_at else None
                    now = time.monotonic()
                    if deadline is not None and now >= deadline and grace_until is None:
                        # Giving up, but never with half a frame on the stream: finish the
                        # frame begun (a short grace), then stop on a frame boundary.
                        limit = next((end for end in self._frame_ends if end >= written), written)
                        grace_until = now + _FRAME_GRACE_S
                        continue
                    if grace_until is not None and now >= grace_until:
                        break  # the reader is stuck mid-frame: the stream is lost anyway
                    # Wait for the reader, but wake often enough to notice a stop request.
                    select.select([], [self.fd], [], 0.05)
                except BrokenPipeError:
                    self.broken = True
                    break
        finally:
            view.release()
        lost = sum(1 for end in self._frame_ends if end > written)
        self._pending.clear()
        self._frame_ends.clear()
        return lost

    def close(self) -> None:
        pass


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
        self.handle = sock  # what a poller watches
        self.eof = False  # sockets never end

    def missing_ipc_endpoints(self) -> list[str]:
        """ipc endpoints with nothing there yet: worth a warning, not an error."""
        return [e for e in self.endpoints if e.startswith("ipc://") and not os.path.exists(e[6:])]

    def read(self, limit: int = _RECV_BATCH) -> list[tuple[bytes, bytes] | BadFrame]:
        out: list[tuple[bytes, bytes] | BadFrame] = []
        recv = self.sock.recv
        get = self.sock.get
        # Zero-copy Frames carry the "more" flag; getsockopt(RCVMORE) would cost ~1.2 µs a part.
        # Ending a read on zmq.Again costs ~4.5 µs (pyzmq builds the exception); at low rates
        # that is paid per frame. So after the first frame, one ZMQ_EVENTS check (~1 µs) says
        # whether a batch is waiting; only then do we read on until Again. (docs/bench.md)
        for i in range(limit):
            if i == 1 and not get(_EVENTS) & _POLLIN:
                break
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
        self.handle = self.fd
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
            return [BadFrame(e.kind, e.detail) for e in self.reader.finish()]
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


def open_output(ctx: zmq.Context, endpoint: str, sndhwm: int, linger_ms: int, when_full: str = "drop"):
    check_endpoint(endpoint, binding=True)
    if endpoint == STDIO:
        return PipeOutput()
    return ZmqOutput(ctx, endpoint, sndhwm, linger_ms, when_full)


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
