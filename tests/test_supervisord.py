"""The pipeline under the real supervisord (`hedgepipe up/status/down`), its files, and the
pure status rendering.

The end-to-end test runs in its own root (a short /tmp directory: unix socket paths are
limited to 107 bytes) holding a copy of supervisord.conf, bin -> the repo's bin, and a copy of
etc/hedgepipe.toml whose tcp ports are replaced by free ones: it never touches the repo's var/
or a pipeline the user is running, and it runs every daemon supervisord.conf lists.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from hedgepipe.config import known_daemons
from hedgepipe.errors import EX_CONFIG, EX_UNAVAILABLE, UpstreamError
from hedgepipe.messages import Heartbeat
from hedgepipe.state import load_state, resolve_url
from hedgepipe.tools import pipeline_status as ps
from hedgepipe.tools.supervisord_client import Supervisor, pid_alive, read_supervisor_conf

from .conftest import REPO, free_tcp_port, wait_until

EX_NOT_HEALTHY = 3
#: Every port the pipeline listens on: endpoints, the simulator's URL, its --port.
_PORT = re.compile(r"((?:tcp|ws)://[^:\"'/]+:|--port )(\d+)")


def clean_env() -> dict[str, str]:
    """The test's environment without the user's hedgepipe settings (supervisord inherits it)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}


@dataclass
class Root:
    path: Path

    @property
    def conf(self) -> Path:
        return self.path / "supervisord.conf"

    @property
    def config(self) -> Path:
        return self.path / "etc" / "hedgepipe.toml"

    @property
    def socket(self) -> str:
        return str(self.path / "var" / "run" / "supervisord.sock")

    def hedgepipe(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # Through the symlinked bin/: the wrapper must still find the repo's .venv.
        cmd = [str(self.path / "bin" / "hedgepipe"), "--config", str(self.config),
               "--supervisord-conf", str(self.conf), *args]
        return subprocess.run(cmd, env=clean_env(), cwd=self.path, capture_output=True, text=True,
                              timeout=timeout)

    def status_json(self) -> tuple[int, dict]:
        done = self.hedgepipe("status", "--json")
        assert done.returncode in (0, EX_NOT_HEALTHY), done.stderr
        return done.returncode, {p["name"]: p for p in json.loads(done.stdout)["programs"]}


def make_root(path: Path) -> Root:
    """A copy of the pipeline's config with every port moved to a free one, consistently
    across supervisord.conf and hedgepipe.toml (the simulator's --port and the feed's URL)."""
    (path / "bin").symlink_to(REPO / "bin")
    (path / "etc").mkdir()
    conf = (REPO / "supervisord.conf").read_text()
    toml = (REPO / "etc" / "hedgepipe.toml").read_text()
    ports = {p: str(free_tcp_port()) for _, p in _PORT.findall(conf + toml)}

    def move(text: str) -> str:
        return _PORT.sub(lambda m: m[1] + ports[m[2]], text)

    (path / "supervisord.conf").write_text(move(conf))
    # run_dir stays relative to the config file ("../var/run"): inside the root.
    (path / "etc" / "hedgepipe.toml").write_text(move(toml))
    return Root(path)


def stop_supervisord(root: Root) -> None:
    """Teardown that works whatever state the test left: shut down, then kill what is left."""
    sup = Supervisor(root.socket)
    pid = sup.pid()
    if pid is None:
        return
    children = [p["pid"] for p in sup.processes() if p["pid"]]
    sup.shutdown()
    if wait_until(lambda: not pid_alive(pid), timeout=30, what="supervisord to exit") is None:
        for leftover in [pid, *children]:
            if pid_alive(leftover):
                os.kill(leftover, signal.SIGKILL)


@pytest.fixture
def root(short_tmp):
    root = make_root(short_tmp)
    try:
        yield root
    finally:
        stop_supervisord(root)


def test_up_status_restart_down_with_real_supervisord(root):
    up = root.hedgepipe("up", "--timeout", "60")
    assert up.returncode == 0, up.stderr
    assert re.search(r"^bus-relay\s+RUNNING\s", up.stdout, re.M), up.stdout
    assert (root.path / "var" / "log" / "bus-relay.log").is_file()

    code, programs = root.status_json()
    assert code == 0
    assert set(programs) == set(read_supervisor_conf(root.conf).programs)
    relay = programs["bus-relay"]
    assert relay["state"] == "RUNNING" and relay["healthy"]
    hb = relay["heartbeat"]
    assert hb["pid"] == relay["pid"]
    assert {"in_msgs", "out_msgs", "drops", "gaps", "decode_errors"} <= hb["counters"].keys()
    assert hb["counters"]["out_msgs"] >= 1 and relay["errors"] == 0
    check_the_market_is_stored(root)
    check_boxes_are_signalled(root)

    sup = Supervisor(root.socket)
    supervisord_pid = sup.pid()
    os.kill(relay["pid"], signal.SIGKILL)

    def restarted():
        proc = next(p for p in sup.processes() if p["name"] == "bus-relay")
        return proc["statename"] == "RUNNING" and proc["pid"] not in (0, relay["pid"]) and proc["pid"]

    new_pid = wait_until(restarted, timeout=30, interval=0.1, what="supervisord to restart bus-relay")
    code, programs = root.status_json()
    assert code == 0
    assert programs["bus-relay"]["pid"] == new_pid
    assert programs["bus-relay"]["heartbeat"]["pid"] == new_pid

    down = root.hedgepipe("down")
    assert down.returncode == 0, down.stderr
    assert not pid_alive(supervisord_pid)
    assert not pid_alive(new_pid)
    assert not os.path.exists(root.socket)
    # store-writer closed its journal on SIGTERM: every file gzipped, none left open
    journal = sorted(p.name for p in (root.path / "var" / "journal").rglob("*.hpj*"))
    assert journal and all(name.endswith(".hpj.gz") for name in journal), journal

    again = root.hedgepipe("down")
    assert again.returncode == 0 and "not running" in again.stderr
    status = root.hedgepipe("status")
    assert status.returncode == EX_UNAVAILABLE and "not running" in status.stderr


def check_the_market_is_stored(root: Root) -> None:
    """`make run`'s promise: the simulator's market, filtered, in Redis and in today's journal,
    which `hedgepipe stats` (no FILE: today's journal of the config) reads."""
    url = resolve_url(str(root.path / "var" / "run"))[0]

    def stored():
        try:
            state = load_state(["clean.instrument", "clean.book", "clean.ticker", "md.index"], url=url)
        except UpstreamError:  # the embedded server is not up yet
            return None
        kinds = {topic.split(".")[1] for topic in state}
        return state if kinds == {"instrument", "book", "ticker", "index"} else None

    state = wait_until(stored, timeout=60, interval=0.2, what="the filtered market in Redis")
    books = [msg for topic, msg in state.items() if topic.startswith("clean.book.")]
    assert any(b.mid is not None and b.spread_bps is not None for b in books)

    def journaled():
        done = root.hedgepipe("stats", "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        return doc if doc["records"] > 0 and doc["instruments"] and doc["indexes"] else None

    doc = wait_until(journaled, timeout=30, interval=0.5, what="hedgepipe stats to read today's journal")
    assert all("/journal/" in f["path"] for f in doc["files"])


def check_boxes_are_signalled(root: Root) -> None:
    """strategy-box runs on the filtered market: its heartbeat shows quotes evaluated, and the
    simulator's injected mispricings (supervisord.conf: --mispricing) become signal.box frames,
    which store-writer keeps in Redis."""
    url = resolve_url(str(root.path / "var" / "run"))[0]

    def evaluating():
        code, programs = root.status_json()
        hb = programs["strategy-box"]["heartbeat"]
        return hb if hb and hb["counters"]["quotes"] > 0 and hb["counters"]["full_scans"] > 0 else None

    hb = wait_until(evaluating, timeout=60, interval=0.5, what="strategy-box to evaluate quotes")
    assert hb["counters"]["handler_errors"] == 0 and hb["counters"]["scan_corrections"] == 0

    def signalled():
        state = load_state(["signal.box"], url=url)
        return state or None

    state = wait_until(signalled, timeout=120, interval=0.5, what="a signal.box in Redis")
    signal = next(iter(state.values()))
    assert signal.event in ("open", "update", "close") and len(signal.legs) in (2, 4)
    assert signal.size > 0 and signal.edge_usd >= 1.0  # the default min_edge_usd


def test_up_refuses_a_socket_path_over_the_unix_limit(tmp_path):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    root = make_root(deep)
    up = root.hedgepipe("up")
    assert up.returncode == EX_CONFIG
    assert "107" in up.stderr and "supervisord.sock" in up.stderr
    assert not (deep / "var").exists()  # nothing started, nothing created


def test_up_refuses_a_config_the_daemons_do_not_read(short_tmp):
    root = make_root(short_tmp)
    other = short_tmp / "other.toml"
    shutil.copy(root.config, other)
    done = subprocess.run([str(root.path / "bin" / "hedgepipe"), "--config", str(other),
                           "--supervisord-conf", str(root.conf), "up"],
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_CONFIG
    assert str(root.config) in done.stderr


def test_check_config_names_the_bad_table(short_tmp):
    root = make_root(short_tmp)
    ok = root.hedgepipe("check-config")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for daemon in known_daemons():
        assert re.search(rf"^OK\s+{re.escape(daemon)}$", ok.stdout, re.M)
    root.config.write_text(root.config.read_text().replace("topics = ", "topicz = "))
    bad = root.hedgepipe("check-config")
    assert bad.returncode == EX_CONFIG
    assert re.search(r"^ERROR\s+bus-relay: .*topicz", bad.stdout, re.M), bad.stdout


def test_every_program_and_console_script_has_a_bin_wrapper():
    conf = read_supervisor_conf(REPO / "supervisord.conf")
    scripts = {ep.name for ep in entry_points(group="console_scripts")
               if ep.value.startswith("hedgepipe.")}
    # Every program is one of ours: a bus daemon, or a helper such as deribit-sim.
    assert set(conf.programs) <= set(known_daemons()) | scripts
    assert set(known_daemons()) <= set(conf.programs)
    for name in scripts | set(conf.programs):
        link = REPO / "bin" / name
        assert link.is_symlink() and os.readlink(link) == ".venv-exec", name
    for name, command in conf.programs.items():
        assert command.split()[0] == str(REPO / "bin" / name)
    assert {str(REPO / "var" / "log"), str(REPO / "var" / "run")} <= set(conf.dirs)
    raw = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    raw.read(REPO / "supervisord.conf")
    assert raw.get("supervisorctl", "serverurl") == "unix://" + raw.get("unix_http_server", "file")


def test_bin_wrapper_without_a_venv_says_to_run_make_install(tmp_path):
    clone = tmp_path / "clone"
    (clone / "bin").mkdir(parents=True)
    shutil.copy(REPO / "bin" / ".venv-exec", clone / "bin" / ".venv-exec")
    (clone / "bin" / "bus-relay").symlink_to(".venv-exec")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "bin").symlink_to(clone / "bin")
    done = subprocess.run([str(tmp_path / "elsewhere" / "bin" / "bus-relay"), "--help"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == EX_UNAVAILABLE
    assert "make install" in done.stderr and str(clone / ".venv") in done.stderr


# ---- status rendering (pure) -------------------------------------------------------------

NOW_NS = 1_800_000_000 * 10**9


def heartbeat(name: str, pid: int, age_s: float, **counters) -> Heartbeat:
    base = {k: 0 for k in ("in_msgs", "out_msgs", "drops", "gaps", *ps.ERROR_COUNTERS)}
    return Heartbeat(name=name, pid=pid, state="running", uptime_s=90.0, counters={**base, **counters},
                     lag_p99_us=1250.0, src=name, seq=7, ts_event=NOW_NS - int(age_s * 1e9))


def proc(name: str, state: str, pid: int, up_s: int = 0) -> dict:
    return {"name": name, "group": name, "statename": state, "pid": pid,
            "start": 1_800_000_000 - up_s, "now": 1_800_000_000}


def test_status_rows_join_supervisord_state_and_heartbeats():
    procs = [proc("etl-filter", "STARTING", 0), proc("bus-relay", "RUNNING", 4242, up_s=3725)]
    hbs = {"bus-relay": heartbeat("bus-relay", 4242, 0.4, in_msgs=1500, out_msgs=1499, drops=1, gaps=2,
                                  decode_errors=3, bad_frames=1, handler_errors=1),
           "zmq-bridge": heartbeat("zmq-bridge", 77, 1.0)}
    rows = ps.build_rows(procs, hbs, NOW_NS)
    assert [r.name for r in rows] == ["bus-relay", "etl-filter", "zmq-bridge"]
    assert rows[0].healthy and rows[0].errors == 5 and rows[0].uptime_s == 3725
    assert not rows[1].healthy and rows[1].heartbeat is None
    assert not rows[2].supervised
    assert not ps.all_healthy(rows)
    assert ps.all_healthy(rows[:1] + rows[2:])  # an unsupervised daemon does not count

    lines = ps.render_table(rows).splitlines()
    assert lines[0].split() == list(ps.HEADERS)
    assert lines[1].split() == ["bus-relay", "RUNNING", "4242", "1:02:05", "0.4s", "1500", "1499",
                                "1", "2", "5", "1.2ms"]
    assert lines[2].split() == ["etl-filter", "STARTING"] + ["-"] * 9
    assert lines[3].split()[:3] == ["zmq-bridge", "-", "77"]
    # aligned: every column starts at the same offset on every line
    assert len({line.index(line.split()[1], len(line.split()[0])) for line in lines}) == 1
    assert {len(line) for line in lines[:2]} == {len(lines[0])}

    doc = ps.rows_as_json(rows)
    assert doc["healthy"] is False
    relay = doc["programs"][0]
    assert relay["heartbeat"]["counters"]["in_msgs"] == 1500
    assert relay["heartbeat"]["age_s"] == pytest.approx(0.4)
    assert doc["programs"][1]["heartbeat"] is None
    json.dumps(doc)  # serialisable as is


def test_status_formats():
    assert ps.format_duration(59) == "0:00:59"
    assert ps.format_duration(90061) == "1d 1:01:01"
    assert ps.format_micros(850) == "850us"
    assert ps.format_micros(1_500_000) == "1.50s"
