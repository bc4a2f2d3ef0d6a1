"""Live progress of a run: rank 0 serves it as Prometheus gauges, the operator reads it back.

The gauges and their text are the contract's (contract.GAUGES). The trainer serves
GET /metrics on --metrics-port (0: off, the default outside Kubernetes) and writes the same
text, without comments, to --termination-log when it finishes, so the final figures
outlive the process (Kubernetes shows that file as the container's termination message).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from resnet50_trainer.contract import render_gauges

# On a shared cluster anyone can open this port: a connection that never sends its request,
# or trickles it, must not keep a thread of the trainer's. Each gets REQUEST_SECONDS to send
# its request and have it answered, and at most MAX_CONNECTIONS are served at once; the
# rest wait in the kernel's listen backlog (LISTEN_BACKLOG deep), not in threads.
REQUEST_SECONDS = 2.0
MAX_CONNECTIONS = 16
LISTEN_BACKLOG = 128


class Publisher:
    """Holds rank 0's latest values; serves them over HTTP when given a port."""

    def __init__(self, port: int = 0, termination_log: str | None = None,
                 request_seconds: float = REQUEST_SECONDS) -> None:
        self.values: dict[str, float] = {}
        self._lock = threading.Lock()
        self._termination_log = Path(termination_log) if termination_log else None
        self._request_seconds = request_seconds
        self._server: ThreadingHTTPServer | None = None
        if port:
            self._server = _BoundedServer(("", port), self._handler())
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
            timeout = publisher._request_seconds  # of each receive and send

            def setup(self) -> None:
                super().setup()
                self.rfile.close()
                self.rfile = io.BufferedReader(
                    _Deadline(self.connection, publisher._request_seconds))

            def handle_one_request(self) -> None:  # the whole request, however it trickles
                self.rfile.raw.restart()
                super().handle_one_request()

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


class _BoundedServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with at most MAX_CONNECTIONS handler threads at once."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, *args: object) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args)

    def process_request(self, request: socket.socket, client_address: object) -> None:
        self._slots.acquire()  # no free thread: the accept loop waits, the rest stay queued
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: it will not give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Deadline(io.RawIOBase):
    """A connection's incoming bytes until a deadline: a timeout per receive alone would let a
    byte a second hold the thread for as long as the sender likes."""

    def __init__(self, connection: socket.socket, seconds: float) -> None:
        self.connection, self.seconds = connection, seconds
        self.restart()

    def restart(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")  # http.server drops it
        self.connection.settimeout(left)
        return self.connection.recv_into(buffer)
