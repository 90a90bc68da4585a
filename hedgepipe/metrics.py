"""An optional Prometheus text endpoint on 127.0.0.1, served from a background thread.

It only reads counters (plain ints), so it needs no lock with the event loop.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .errors import EndpointError

_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def render(instance: str, counters: dict[str, int]) -> str:
    lines = []
    for key, value in sorted(counters.items()):
        gauge = key == "subscriptions"
        metric = "hedgepipe_" + _NAME_OK.sub("_", key) + ("" if gauge else "_total")
        lines.append(f"# TYPE {metric} {'gauge' if gauge else 'counter'}")
        lines.append(f'{metric}{{instance="{instance}"}} {value}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, port: int, instance: str, snapshot: Callable[[], dict[str, int]]):
        self.port = port
        self.instance = instance
        self.snapshot = snapshot
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = render(outer.instance, outer.snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep stderr for our structured logs
                pass

        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        except OSError as exc:
            raise EndpointError(f"metrics port 127.0.0.1:{self.port}: {exc.strerror}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
