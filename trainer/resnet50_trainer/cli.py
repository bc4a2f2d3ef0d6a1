"""`resnet50-train`: parse, launch one process per GPU when asked, train; errors in one line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from resnet50_trainer.config import parse_config
from resnet50_trainer.contract import EXIT_STOPPED, SIGNAL_EXIT_BASE
from resnet50_trainer.errors import ConfigError, RankConfigError, TrainerError
from resnet50_trainer.stopping import Stopped

log = logging.getLogger("resnet50_trainer")


def _configure_logging(is_main: bool) -> None:
    for old in list(log.handlers):  # main() may run more than once in one process (tests)
        log.removeHandler(old)
    handler = logging.StreamHandler(sys.stdout if is_main else sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False


def one_line(exc: TrainerError) -> str:
    """The message, also when a DataLoader worker re-raised it with its traceback inside."""
    text = str(exc).strip()
    if "\nOriginal Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(SIGNAL_EXIT_BASE + signum)


def main(argv: list[str] | None = None) -> None:
    # A container's first process gets no default action for SIGTERM: without a handler a
    # pod deleted while the trainer starts (importing torch, indexing) would wait for the
    # grace period's SIGKILL. torchrun and the training loop set their own later.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging(is_main=os.environ.get("RANK", "0") == "0")
    try:
        if argv[:1] == ["plot"]:  # resnet50-train plot OUTPUT_DIR: a picture of metrics.jsonl
            from resnet50_trainer.plot import main as plot

            plot(argv[1:])
            return
        from resnet50_trainer.launch import needs_launch  # imports torch

        cfg = parse_config(argv, os.environ)
        if needs_launch(cfg, os.environ):
            from resnet50_trainer.launch import launch

            sys.exit(launch(cfg, argv))
        from resnet50_trainer.train import run

        run(cfg)
    except Stopped as exc:  # not an error: the state is saved, a restart continues it
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"resnet50-train: {exc}", file=sys.stderr)
        sys.exit(EXIT_STOPPED)
    except TrainerError as exc:
        shared = isinstance(exc, ConfigError) and not isinstance(exc, RankConfigError)
        if not shared or os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"resnet50-train: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
