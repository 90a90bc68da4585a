"""deribit-sim as a user runs it: a subprocess that says where it listens and stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess

import pytest

from ._sim_helpers import Client
from .conftest import VENV_BIN

SIM = str(VENV_BIN / "deribit-sim")


def start(*args) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([SIM, "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()  # blocks until ready or the process died
    assert line.startswith("listening ws://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
    return proc, line.split()[1]


def test_starts_serves_and_exits_zero_on_sigterm():
    proc, url = start("--seed", "3", "--currencies", "BTC", "--max-strikes", "4")
    try:
        client = Client(url)
        assert client.result("public/test")["version"]
        assert client.result("public/get_index_price", {"index_name": "btc_usd"})["index_price"] > 0
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_replay_from_the_command_line(shared_data):
    recording = shared_data / "deribit" / "DERIBIT.ws.1.0"
    proc, url = start("--replay", str(recording), "--as-fast-as-possible")
    try:
        client = Client(url)
        assert len(client.result("public/get_instruments", {"currency": "ETH", "kind": "option"})) == 418
        client.result("public/subscribe", {"channels": ["book.ETH-30JUL21-2800-C.raw"]})
        assert client.next(lambda m: m.get("method") == "subscription")["params"]["data"]["type"] == "snapshot"
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("args", [["--replay", "/nonexistent/DERIBIT.ws"], ["--chain", "/nonexistent.csv"],
                                  ["--currencies", "XRP"], ["--too-many-requests", "two"]])
def test_bad_inputs_exit_with_the_config_error_code(args):
    result = subprocess.run([SIM, "--port", "0", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 78, result.stderr
    assert result.stdout == "" and "ERROR" in result.stderr
