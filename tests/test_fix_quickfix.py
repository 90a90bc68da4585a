"""Our FIX client against QuickFIX, a real independent FIX engine (Debian's prebuilt ``executor``).

The executor listens on all addresses, so it runs in its own network namespace (``unshare --net``,
loopback up) and the test connects from a thread that has joined that namespace (setns): nothing
is exposed on the host. Needs root (CI runs as root) and the Debian packages
``libquickfix-doc`` + ``libquickfix17``; without them these tests FAIL, naming what is missing.
"""

from __future__ import annotations

import base64
import ctypes
import gzip
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hedgepipe.venues.deribit.fix_driver import FixConnection
from hedgepipe.venues.deribit.fix_session import FixConfig, FixSession
from hedgepipe.venues.deribit.fix_wire import FileSeqStore

from .conftest import wait_until

EXECUTOR_GZ = Path("/usr/share/doc/libquickfix-doc/examples/executor/C++/.libs/executor.gz")
INSTALL = "apt-get install -y libquickfix-doc libquickfix17"
PORT = 5001  # inside the executor's own network namespace, so it cannot collide
#: Deadline for each step (a deadline, not a delay: steps take ~1 s; a loaded CI machine
#: must not turn a slow step into a failure).
WAIT = 15
SECRET = "quickfix-test-secret"
CLONE_NEWNET = 0x40000000


def _executor_binary(tmp: Path) -> Path:
    if not EXECUTOR_GZ.exists():
        pytest.fail(f"QuickFIX executor not found at {EXECUTOR_GZ}: install it with `{INSTALL}`")
    if not Path("/usr/lib/x86_64-linux-gnu/libquickfix.so.17").exists() and \
            not list(Path("/usr/lib").rglob("libquickfix.so.17")):
        pytest.fail(f"libquickfix.so.17 not found: install it with `{INSTALL}`")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` not found (util-linux / iproute2): QuickFIX runs in its own netns")
    binary = tmp / "executor"
    with gzip.open(EXECUTOR_GZ) as src, open(binary, "wb") as dst:
        shutil.copyfileobj(src, dst)
    binary.chmod(0o755)
    return binary


class QuickFix:
    """The executor acceptor in its own network namespace, its screen log captured to a file."""

    def __init__(self, tmp: Path, dictionary: Path):
        self.tmp = tmp
        self.cfg = tmp / "executor.cfg"
        self.cfg.write_text(f"""[DEFAULT]
ConnectionType=acceptor
SocketAcceptPort={PORT}
SocketReuseAddress=Y
FileStorePath={tmp / 'store'}
StartTime=00:00:00
EndTime=00:00:00
UseDataDictionary=Y
DataDictionary={dictionary}
ValidateUserDefinedFields=N
ResetOnLogon=N
ResetOnLogout=N
ResetOnDisconnect=N
[SESSION]
BeginString=FIX.4.4
SenderCompID=DERIBITSERVER
TargetCompID=HEDGEPIPE
""")
        self.log_path = tmp / "executor.out"
        self.proc: subprocess.Popen | None = None

    def start(self, binary: Path) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$1"', str(binary),
             str(self.cfg)], stdout=self._log, stderr=subprocess.STDOUT)

    def connect(self, timeout: float = 5.0) -> socket.socket:
        """Connect from a thread that joins the executor's namespace (a netns is per thread)."""
        result: dict = {}
        # Until `unshare` has run, the child is still in our namespace: joining it then would
        # connect to the host's port, not the executor's.
        ours = os.readlink("/proc/self/ns/net")
        wait_until(lambda: self.proc.poll() is not None
                   or os.readlink(f"/proc/{self.proc.pid}/ns/net") != ours,
                   timeout=timeout, what="the executor's own network namespace")

        def join_and_connect():
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{self.proc.pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    result["error"] = OSError(ctypes.get_errno(), "setns into the executor's netns "
                                                                  "(needs root / CAP_SYS_ADMIN)")
                    return
            finally:
                os.close(fd)
            def connected():  # the acceptor's listen socket may not be up yet: retry
                try:
                    result["sock"] = socket.create_connection(("127.0.0.1", PORT), timeout=1)
                    return True
                except OSError as exc:
                    result["last_error"] = exc
                    return self.proc.poll() is not None  # it died: stop waiting
            try:
                wait_until(connected, timeout=timeout, interval=0.02, what="QuickFIX's listen socket")
            except AssertionError as exc:
                result["error"] = f"{exc}: {result.get('last_error')}"
            if "sock" not in result and "error" not in result:
                result["error"] = f"executor exited: {result.get('last_error')}"

        thread = threading.Thread(target=join_and_connect)
        thread.start()
        thread.join()
        if "error" in result:
            raise AssertionError(f"cannot reach QuickFIX: {result['error']}; log:\n{self.output()}")
        return result["sock"]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture
def quickfix(tmp_path, shared_data):
    binary = _executor_binary(tmp_path)
    engine = QuickFix(tmp_path, shared_data / "fix" / "FIX44.xml")
    engine.start(binary)
    yield engine
    engine.stop()


def client(store_path: Path, reset: bool) -> FixSession:
    store = FileSeqStore(store_path)
    store.load()
    cfg = FixConfig(sender_comp_id="HEDGEPIPE", client_id="hedgepipe-client", client_secret=SECRET,
                    heartbeat_s=1, cancel_on_disconnect=True, reset_seq_on_logon=reset)
    return FixSession(cfg, store)


def drive(conn: FixConnection, predicate, timeout: float, what: str, timers: bool = True):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; session state "
                                 f"{conn.session.state}, counters {dict(conn.session.counters)}")
        conn.poll(0.05, timers=timers)


def test_logon_heartbeats_sequence_reset_resend_and_logout(quickfix, tmp_path):
    store_path = tmp_path / "client.seq"
    session = client(store_path, reset=True)
    conn = FixConnection(session, quickfix.connect())
    conn.start()
    drive(conn, lambda: session.state == "active", WAIT, "Logon answer")

    # QuickFIX saw the Deribit digest: recompute it from the Logon it logged.
    logon = next(line for line in quickfix.output().splitlines() if "\x0135=A\x01" in line and "96=" in line)
    raw = re.search("\x0196=([^\x01]*)", logon).group(1)
    assert re.fullmatch(r"\d{13}\.[A-Za-z0-9+/=]{44}", raw)
    expected = base64.b64encode(hashlib.sha256((raw + SECRET).encode()).digest()).decode()
    assert f"\x01554={expected}\x01" in logon and "\x019001=Y\x01" in logon and SECRET not in logon

    # Heartbeats both ways at HeartBtInt=1.
    drive(conn, lambda: session.counters["in_0"] >= 2 and session.counters["out_0"] >= 2, WAIT, "heartbeats")
    # Our TestRequest is answered.
    session.test_request()
    drive(conn, lambda: session.counters["test_request_answered"] >= 1, WAIT, "TestRequest answer")
    # Silent on our side: QuickFIX's TestRequest reaches us, we answer, the session survives.
    drive(conn, lambda: session.counters["in_1"] >= 1, WAIT, "QuickFIX TestRequest", timers=False)
    # SequenceReset-Reset from us: QuickFIX takes the jump (answers the next TestRequest in sequence).
    session.reset_sequence(session.store.next_sender + 20)
    session.test_request()
    drive(conn, lambda: session.counters["test_request_answered"] >= 2, WAIT, "answer after SequenceReset")
    assert session.state == "active" and session.counters["rejects"] == 0
    session.logout("done")
    drive(conn, lambda: session.state == "closed", WAIT, "Logout confirmation")
    assert session.disconnect_reason == "logout confirmed" and conn.sock is None
    session.store.close()

    # Restart from the persisted numbers, but as if the last 3 incoming ones were lost and our
    # sender number ran ahead: QuickFIX asks us to resend (we gap-fill) and we ask it (it gap-fills).
    store = FileSeqStore(store_path)
    store.load()
    store.next_target -= 3
    store.next_sender += 5
    store.save()
    store.close()
    session = client(store_path, reset=False)
    conn = FixConnection(session, quickfix.connect())
    conn.start()
    drive(conn, lambda: session.state == "active" and session.counters["gap_fills"] >= 1
          and session.counters["resend_requests"] >= 1, WAIT, "both gaps filled")
    assert session.counters["seq_too_high"] >= 1
    session.test_request()
    drive(conn, lambda: session.counters["test_request_answered"] >= 1, WAIT, "TestRequest after the gaps")
    session.logout()
    drive(conn, lambda: session.state == "closed", WAIT, "second Logout")
    assert session.disconnect_reason == "logout confirmed"
    assert session.counters["rejects"] == 0 and session.counters["seq_too_low"] == 0
    assert quickfix.proc.poll() is None, quickfix.output()
