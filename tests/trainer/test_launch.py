import pytest

from resnet50_trainer.config import parse_config
from resnet50_trainer.launch import exit_code_of, needs_launch, torchrun_args


def test_single_process_runs_without_torchrun():
    assert not needs_launch(parse_config(["--synthetic"]), {})


def test_several_processes_launch_unless_already_a_worker():
    cfg = parse_config(["--synthetic", "--nproc-per-node", "2"])
    assert needs_launch(cfg, {})
    assert not needs_launch(cfg, {"LOCAL_RANK": "0", "RANK": "1", "WORLD_SIZE": "2"})


def test_one_machine_uses_a_free_local_port():
    args = torchrun_args(parse_config(["--synthetic", "--nproc-per-node", "4"]), ["--synthetic"])
    assert args[:3] == ["--nnodes=1", "--nproc-per-node=4", "--standalone"]
    assert args[-3:] == ["--module", "resnet50_trainer", "--synthetic"]


def test_two_machines_use_a_static_rendezvous_on_the_master():
    cfg = parse_config(["--preset", "fp32-16cards", "--synthetic", "--node-rank", "1",
                        "--master-addr", "node0", "--master-port", "23456"])
    args = torchrun_args(cfg, ["--preset", "fp32-16cards"])
    assert args[:5] == ["--nnodes=2", "--nproc-per-node=8", "--node-rank=1",
                        "--master-addr=node0", "--master-port=23456"]
    assert "--max-restarts=0" in args


@pytest.mark.parametrize(("elastic", "shell"), [(0, 0), (2, 2), (1, 1), (-9, 137), (-15, 143)])
def test_exit_codes_as_a_shell_reports_them(elastic, shell):
    assert exit_code_of(elastic) == shell
