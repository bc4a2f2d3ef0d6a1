"""Live progress of a run: rank 0 serves it as Prometheus gauges, the operator reads it back.

The gauges and their text are the contract's (contract.GAUGES). The trainer serves
GET /metrics on --metrics-port (0: off, the default outside Kubernetes) and writes the same
text, without comments, to --termination-log when it finishes, so the final figures
outlive the process (Kubernetes shows that file as the container's termination message).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from resnet50_trainer.contract import render_gauges


class Publisher:
    """Holds rank 0's latest values; serves them over HTTP when given a port."""

    def __init__(self, port: int = 0, termination_log: str | None = None) -> None:
        self.values: dict[str, float] = {}
        self._lock = threading.Lock()
        self._termination_log = Path(termination_log) if termination_log else None
        self._server: ThreadingHTTPServer | None = None
        if port:
            self._server = ThreadingHTTPServer(("", port), self._handler())
            self._server.daemon_threads = True
            threading.Thread(target=self._server.serve_forever, name="metrics",
                             daemon=True).start()

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    def update(self, **values: float | None) -> None:
        with self._lock:
            self.values.update({k: v for k, v in values.items() if v is not None})

    def text(self, comments: bool = True) -> str:
        with self._lock:
            return render_gauges(self.values, comments)

    def finish(self) -> None:
        """Mark the run finished and leave the final values in the termination log."""
        self.update(finished=1, eta_seconds=0)
        if self._termination_log is not None:
            try:
                self._termination_log.write_text(self.text(comments=False))
            except OSError:  # not in a container, or not writable: the log stays the record
                pass

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        publisher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = publisher.text().encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader gave up (its timeout): no traceback in the trainer's log

            def log_message(self, *args: object) -> None:  # no access log in the trainer's
                pass

        return Handler
