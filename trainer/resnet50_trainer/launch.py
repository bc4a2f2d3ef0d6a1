"""Start one process per GPU, on one machine or several, through torchrun in-process.

`resnet50-train --nproc-per-node 8 ...` or a preset for several cards runs torchrun
with this very command line as the workers' command, so nobody writes torchrun
lines by hand. Unlike the torchrun command, which exits 1 whatever failed, the
launcher exits with the failing worker's own code (2 for a configuration error,
128+N for signal N; 128+N too when the launcher itself is stopped by signal N),
which is what the operator classifies restarts by.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import torch

from resnet50_trainer.config import TrainConfig
from resnet50_trainer.data.layouts import check_data_path
from resnet50_trainer.errors import ConfigError

SHUTDOWN_SECONDS = 900


def is_worker(env: Mapping[str, str]) -> bool:
    """torchrun sets LOCAL_RANK for every worker it starts."""
    return "LOCAL_RANK" in env


def processes_per_node(cfg: TrainConfig) -> int:
    return cfg.nproc_per_node or 1


def needs_launch(cfg: TrainConfig, env: Mapping[str, str] = os.environ) -> bool:
    return not is_worker(env) and cfg.nnodes * processes_per_node(cfg) > 1


def torchrun_args(cfg: TrainConfig, train_argv: list[str]) -> list[str]:
    nproc = processes_per_node(cfg)
    if cfg.nnodes == 1:  # a free local port, so two jobs on one machine never collide
        where = ["--standalone"]
    else:
        where = [
            f"--node-rank={cfg.node_rank}",
            f"--master-addr={cfg.master_addr}",
            f"--master-port={cfg.master_port}",
        ]
    return [
        f"--nnodes={cfg.nnodes}",
        f"--nproc-per-node={nproc}",
        *where,
        "--max-restarts=0",  # restarts belong to the operator: whole group, from a checkpoint
        "--module",
        "resnet50_trainer",
        *train_argv,
    ]


def exit_code_of(exitcode: int) -> int:
    """torch.distributed.elastic reports death by signal N as -N; shells say 128+N."""
    return 128 - exitcode if exitcode < 0 else exitcode


def launch(cfg: TrainConfig, train_argv: list[str]) -> int:
    """Run the job's processes on this machine; return the exit code for the command."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    nproc = processes_per_node(cfg)
    if cfg.device != "cpu" and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise ConfigError(
            f"{nproc} processes per node were asked for, but this machine shows "
            f"{torch.cuda.device_count()} GPUs"
        )
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no GPU is visible")
    if cfg.data_backend == "pytorch":  # fail before starting a process per GPU
        check_data_path(cfg.data_path or "")
    # On SIGTERM torchrun passes the signal on and waits this long before SIGKILL: the
    # workers finish their report window and save (stopping.py); the pod's grace period
    # is the real bound.
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_SECONDS))
    try:
        run(get_args_parser().parse_args(torchrun_args(cfg, train_argv)))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return exit_code_of(failure.exitcode)
    except SignalException as exc:  # SIGTERM from a pod deletion: torchrun stopped the workers
        print(f"resnet50-train: stopped by {exc.sigval.name}", file=sys.stderr)
        return 128 + exc.sigval
    return 0
