"""One benchmark run: start generator, hops and sink as processes, drive them, clean up.

ipc: ``gen`` binds ``ipc://DIR/gen.sock``, hop *i* reads the previous endpoint and binds
``hop<i>.sock``, the sink connects to the last one. pipe: the processes are joined stdout
to stdin, exactly ``gen --out - | hop --in - --out - | ... | sink --in -``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .proc import Channel, die_with_parent

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class RunError(Exception):
    """A run that did not finish: a process died or a deadline passed."""


@dataclass
class Scenario:
    path: str  # "runtime" | "raw"
    transport: str  # "ipc" | "pipe"
    hops: int
    rate: float  # msgs/s offered; 0 = saturation
    count: int

    @property
    def label(self) -> str:
        load = "sat" if not self.rate else f"{self.rate:g}/s"
        return f"{self.path} {self.transport} {self.hops}-hop {load}"


@dataclass
class Outcome:
    scenario: Scenario
    gen: dict
    sink: dict
    hop_counters: list[dict] = field(default_factory=list)  # runtime hops only
    #: CPU seconds (user + system, all threads) each process used between go and the result.
    cpu_s: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runtime_config(workdir: Path, hwm: int) -> Path:
    path = workdir / "bench.toml"
    path.write_text(f'[runtime]\nrun_dir = "{workdir}/run"\nsndhwm = {hwm}\nrcvhwm = {hwm}\n'
                    f"linger_ms = 200\ndrain_timeout_s = 1.0\n")
    return path


class Chain:
    def __init__(self, sc: Scenario, workdir: Path, hwm: int, profile_dir: Path | None = None):
        self.sc = sc
        self.workdir = workdir
        self.hwm = hwm
        #: Run hops under cProfile, one .prof file per hop here (hot spots, not timings).
        self.profile_dir = profile_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.gen_ctl: Channel | None = None
        self.sink_ctl: Channel | None = None

    # ---- processes ----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], *, stdin=subprocess.DEVNULL,
               stdout=subprocess.DEVNULL, ctl: bool = False):
        """Start one process; with ``ctl``, return our end of its control channel."""
        ours = theirs = None
        if ctl:
            ours, theirs = socket.socketpair()
            argv = [*argv, "--ctl", str(theirs.fileno())]
        with open(self.workdir / f"{name}.err", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, stdin=stdin,
                                    stdout=stdout, stderr=err, preexec_fn=die_with_parent,
                                    pass_fds=(theirs.fileno(),) if theirs else ())
        self.procs.append((name, proc))
        if theirs:
            theirs.close()
            return Channel(ours), proc
        return None, proc

    def _hop_argv(self, i: int, inp: str, out: str) -> list[str]:
        name = f"hop{i}"
        prefix = []
        if self.profile_dir is not None:
            stem = self.sc.label.replace(" ", "_").replace("/", "")
            prefix = ["cProfile", "-o", str(self.profile_dir / f"{stem}-{name}.prof"), "-m"]
        if self.sc.path == "raw":
            return [*prefix, "bench.rawhop", "--in", inp, "--out", out, "--instance", name,
                    "--hwm", str(self.hwm)]
        return [*prefix, "bench.passthrough", "--in", inp, "--out", out, "--topic", "md.book",
                "--config", str(runtime_config(self.workdir, self.hwm)), "--instance", name,
                "--log-json"]

    def start(self) -> None:
        sc, hwm = self.sc, str(self.hwm)
        gen = ["bench.gen", "--rate", str(sc.rate), "--count", str(sc.count), "--hwm", hwm]
        sink = ["bench.sink", "--count", str(sc.count), "--hwm", hwm]
        if sc.transport == "pipe":
            self.gen_ctl, prev = self._spawn("gen", [*gen, "--out", "-"], stdout=subprocess.PIPE,
                                             ctl=True)
            for i in range(1, sc.hops + 1):
                _, hop = self._spawn(f"hop{i}", self._hop_argv(i, "-", "-"), stdin=prev.stdout,
                                     stdout=subprocess.PIPE)
                prev.stdout.close()  # only the next stage holds the read end: EOF propagates
                prev = hop
            self.sink_ctl, _ = self._spawn("sink", [*sink, "--in", "-"], stdin=prev.stdout,
                                           ctl=True)
            prev.stdout.close()
            return
        (self.workdir / "run").mkdir(exist_ok=True)
        endpoints = [f"ipc://{self.workdir}/gen.sock"] + [
            f"ipc://{self.workdir}/hop{i}.sock" for i in range(1, sc.hops + 1)]
        self.sink_ctl, _ = self._spawn("sink", [*sink, "--in", endpoints[-1]], ctl=True)
        for i in range(sc.hops, 0, -1):
            self._spawn(f"hop{i}", self._hop_argv(i, endpoints[i - 1], endpoints[i]))
        self.gen_ctl, _ = self._spawn("gen", [*gen, "--out", endpoints[0]], ctl=True)

    # ---- the run ------------------------------------------------------------------------

    def _await(self, ctl: Channel, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = ctl.recv(0.2)
            if msg is not None and msg.get("event") == event:
                return msg
            dead = [(n, p.returncode) for n, p in self.procs if p.poll() not in (None, 0)]
            if dead or ctl.eof:
                raise RunError(f"{self.sc.label}: waiting for {event}: exited {dead or 'control closed'}"
                               f"{self._stderr_tail()}")
        raise RunError(f"{self.sc.label}: no {event} within {timeout:.0f} s{self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        lines = []
        for name, _ in self.procs:
            text = (self.workdir / f"{name}.err").read_text(errors="replace").strip()
            if text:
                lines.append(f"\n  [{name}] " + "\n  ".join(text.splitlines()[-5:]))
        return "".join(lines)

    def run(self) -> Outcome:
        sc = self.sc
        self.start()
        self._await(self.sink_ctl, "ready", STARTUP_TIMEOUT_S)
        cpu_before = {name: cpu_seconds(p.pid) for name, p in self.procs}
        self.gen_ctl.send(cmd="go")
        expected_s = sc.count / (sc.rate or 2000.0)
        gen = self._await(self.gen_ctl, "done", 10.0 + 3 * expected_s)
        sink = self._await(self.sink_ctl, "result", 10.0 + expected_s)
        cpu = {}
        for name, p in self.procs:
            after = cpu_seconds(p.pid)
            if after is not None and cpu_before.get(name) is not None:
                cpu[name] = after - cpu_before[name]
        self.gen_ctl.send(cmd="stop")
        self.stop()
        return Outcome(sc, gen, sink, self._hop_counters(), cpu)

    def _hop_counters(self) -> list[dict]:
        """The runtime's final counters, from each hop's ``stopped`` log line."""
        if self.sc.path != "runtime":
            return []
        found = []
        for i in range(1, self.sc.hops + 1):
            for line in (self.workdir / f"hop{i}.err").read_text(errors="replace").splitlines():
                if line.startswith("{") and '"stopped"' in line:
                    found.append(json.loads(line))
        return found

    def stop(self) -> None:
        """SIGTERM everything still running (runtime hops drain), then wait; kill stragglers."""
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _, proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ctl in (self.gen_ctl, self.sink_ctl):
            if ctl is not None:
                ctl.close()
        self.gen_ctl = self.sink_ctl = None
