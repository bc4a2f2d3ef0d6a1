"""A tenant's hostile /metrics endpoint, for the tests that the operator's reads of it are
cut short and never hold anything else up: a huge answer at /huge/metrics, and at any
other path one that trickles a byte every 0.1 s for a minute."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator


class Hostile(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.end_headers()
        try:
            if self.path == "/huge/metrics":
                self.wfile.write(b"resnet50_epoch 1\n" * 200_000)  # 3.4 MB
            else:
                for _ in range(600):
                    self.wfile.write(b"#")
                    self.wfile.flush()
                    time.sleep(0.1)
        except OSError:  # the reader gave up
            pass

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving() -> Iterator[int]:
    """The hostile endpoint on 127.0.0.1; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
