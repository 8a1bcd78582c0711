"""A JSON document served over HTTP on loopback, for tests and benchmarks (a platform's key set, say)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from typing import Any


class JSONServer:
    """`document()` as JSON at every path of http://127.0.0.1:<port> (HTTP/1.1: clients keep their connection);
    counts the requests. `close()` stops it."""

    def __init__(self, document: Callable[[], Any]) -> None:
        self.requests = 0
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                served.requests += 1
                body = json.dumps(document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
