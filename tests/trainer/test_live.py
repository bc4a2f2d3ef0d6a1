"""Rank 0's live progress: the Prometheus text, its endpoint and the termination log."""

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from devcluster.controlplane import free_port
from resnet50_trainer import live
from resnet50_trainer.contract import parse_gauges, render_gauges
from resnet50_trainer.engine import eta_seconds


def test_the_text_is_prometheus_gauges_that_parse_back():
    values = {"epoch": 3, "epochs": 90, "loss": 2.25, "images_per_second": 2471.5}
    text = render_gauges(values)
    assert "# TYPE resnet50_epoch gauge\nresnet50_epoch 3\n" in text
    assert parse_gauges(text) == values
    assert parse_gauges(render_gauges({"checkpoint_timestamp_seconds": 1795000000.25})) == {
        "checkpoint_timestamp_seconds": 1795000000.25}  # to the fraction of a second
    assert render_gauges(values, comments=False).splitlines()[0] == "resnet50_epoch 3"


def test_parsing_skips_what_it_does_not_know():
    text = ("resnet50_epoch 4\nresnet50_unknown 1\nresnet50_loss NaN\n"
            'resnet50_step{rank="0"} 7\nother_metric 3\ngarbage line\n')
    assert parse_gauges(text) == {"epoch": 4, "step": 7}


def test_the_endpoint_serves_the_latest_values():
    publisher = live.Publisher(port=free_port())
    try:
        publisher.update(epoch=1, global_step=10, loss=None)
        publisher.update(global_step=12)
        url = f"http://127.0.0.1:{publisher.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            assert parse_gauges(response.read().decode()) == {"epoch": 1, "global_step": 12}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{publisher.port}/", timeout=5)
    finally:
        publisher.close()


def test_a_reader_that_hung_up_is_no_error():
    """The operator's read times out on a busy machine and closes; the answer then meets a
    closed connection, which must not put a traceback in the trainer's log."""

    class HungUp:
        def write(self, data: bytes) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    handler = object.__new__(live.Publisher()._handler())  # no server: the handler alone
    handler.path, handler.request_version, handler.wfile = "/metrics", "HTTP/1.1", HungUp()
    handler.requestline, handler.command = "GET /metrics HTTP/1.1", "GET"
    handler.do_GET()  # returns quietly


def test_idle_connections_neither_grow_the_threads_nor_lock_a_reader_out():
    """A scanner's 100 connections that never send a request: the trainer serves at most
    MAX_CONNECTIONS of them at a time, each for its short time, and a real read gets through."""
    publisher = live.Publisher(port=free_port(), request_seconds=0.25)
    publisher.update(epoch=2, global_step=20)
    before = threading.active_count()
    most, done = [before], threading.Event()

    def count_threads() -> None:
        while not done.wait(0.01):
            most.append(threading.active_count())

    counter = threading.Thread(target=count_threads, daemon=True)
    counter.start()
    idle = []
    try:
        idle = [socket.create_connection(("127.0.0.1", publisher.port), timeout=5)
                for _ in range(100)]
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{publisher.port}/metrics",
                                    timeout=5) as response:
            assert parse_gauges(response.read().decode()) == {"epoch": 2, "global_step": 20}
        assert time.monotonic() - started < 5
    finally:
        done.set()
        counter.join()
        for connection in idle:
            connection.close()
        publisher.close()
    # the counter, the handlers, and as many again that gave back their slot but have not
    # quite ended: bounded all the same, where each connection's own thread would be 100
    assert max(most) <= before + 1 + 2 * live.MAX_CONNECTIONS


def test_an_idle_connection_is_closed_after_the_timeout():
    publisher = live.Publisher(port=free_port(), request_seconds=0.25)
    try:
        with socket.create_connection(("127.0.0.1", publisher.port), timeout=5) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""  # the server hung up, long before this side's 5 s
            assert time.monotonic() - started < 3
    finally:
        publisher.close()


def test_a_trickled_request_is_cut_off_at_its_deadline():
    """A byte every 50 ms never trips a timeout per receive; the request's deadline does."""
    publisher = live.Publisher(port=free_port(), request_seconds=0.25)
    try:
        with socket.create_connection(("127.0.0.1", publisher.port), timeout=5) as slow:
            slow.sendall(b"GET /metrics HTTP/1.0\r\nX-Slow: ")
            slow.settimeout(0.05)

            def hung_up() -> bool:  # waits 50 ms for the server to
                try:
                    return slow.recv(1) == b""
                except TimeoutError:
                    return False
                except ConnectionResetError:  # ... with a byte it had not read
                    return True

            started = time.monotonic()
            while not (closed := hung_up()) and time.monotonic() - started < 5:
                slow.sendall(b"x")
            assert closed
            assert time.monotonic() - started < 3
    finally:
        publisher.close()


def test_the_final_figures_are_left_in_the_termination_log(tmp_path):
    log = tmp_path / "termination-log"
    publisher = live.Publisher(termination_log=str(log))
    publisher.update(epoch=90, epochs=90, top1_accuracy=76.13, eta_seconds=60)
    publisher.finish()
    assert parse_gauges(log.read_text()) == {"epoch": 90, "epochs": 90, "top1_accuracy": 76.13,
                                           "eta_seconds": 0, "finished": 1}
    assert "#" not in log.read_text()  # the kubelet keeps 4 KiB of it


def test_eta_is_the_steps_left_at_this_epochs_pace():
    assert eta_seconds(steps_left=900, seconds_so_far=50.0, steps_so_far=100) == 450.0
    assert eta_seconds(steps_left=10, seconds_so_far=0.0, steps_so_far=0) == 0.0
