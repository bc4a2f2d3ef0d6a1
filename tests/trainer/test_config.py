import pytest

from resnet50_trainer.config import PRESETS, TrainConfig, parse_config, validate_world
from resnet50_trainer.contract import EXIT_CONFIG
from resnet50_trainer.errors import ConfigError

SYNTH = ["--synthetic"]


def test_defaults_follow_torchvision_recipe():
    cfg = parse_config(SYNTH)
    assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.momentum, cfg.weight_decay) == (
        "resnet50", 90, 32, 0.9, 1e-4)
    assert cfg.precision == "fp32" and cfg.data_backend == "synthetic"


def test_amp_is_an_alias_of_precision_amp():
    assert parse_config([*SYNTH, "--amp"]).precision == "amp"
    assert parse_config([*SYNTH, "--precision", "bf16"]).precision == "bf16"


def test_preset_sets_defaults_and_command_line_wins():
    cfg = parse_config(["--preset", "amp-8cards", *SYNTH])
    assert (cfg.nproc_per_node, cfg.batch_size, cfg.precision, cfg.channels_last) == (
        8, 480, "amp", True)
    cfg = parse_config(["--preset", "amp-8cards", *SYNTH, "-b", "64", "--no-channels-last"])
    assert (cfg.batch_size, cfg.channels_last) == (64, False)


@pytest.mark.parametrize(
    ("preset", "nodes", "procs", "batch", "precision"),
    [
        ("fp32-1card", 1, 1, 280, "fp32"),
        ("amp-1card", 1, 1, 300, "amp"),
        ("fp32-4cards", 1, 4, 300, "fp32"),
        ("amp-4cards", 1, 4, 512, "amp"),
        ("fp32-8cards", 1, 8, 300, "fp32"),
        ("amp-8cards", 1, 8, 480, "amp"),
        ("fp32-16cards", 2, 8, 300, "fp32"),
        ("amp-16cards", 2, 8, 480, "amp"),
    ],
)
def test_presets_match_the_reference_results(preset, nodes, procs, batch, precision):
    cfg = TrainConfig(**PRESETS[preset])
    assert (cfg.nnodes, cfg.nproc_per_node, cfg.batch_size, cfg.precision) == (
        nodes, procs, batch, precision)


def test_every_preset_is_valid():
    for name in PRESETS:
        args = ["--preset", name, *SYNTH]
        if PRESETS[name].get("nnodes", 1) > 1:
            args += ["--node-rank", "1", "--master-addr", "node0"]
        parse_config(args)


def test_pet_environment_sits_between_preset_and_command_line():
    env = {"PET_NNODES": "3", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "1",
           "PET_MASTER_ADDR": "job-0.job", "PET_MASTER_PORT": "23456"}
    cfg = parse_config(["--preset", "fp32-16cards", *SYNTH], env)
    assert (cfg.nnodes, cfg.nproc_per_node, cfg.node_rank, cfg.master_addr, cfg.master_port) == (
        3, 2, 1, "job-0.job", 23456)
    assert parse_config([*SYNTH, "--nnodes", "4"], env).nnodes == 4


def test_bad_pet_variable_is_named():
    with pytest.raises(ConfigError, match="PET_NPROC_PER_NODE='gpu' in the environment"):
        parse_config(SYNTH, {"PET_NPROC_PER_NODE": "gpu"})


def test_lr_scales_linearly_from_base_per_256_images():
    cfg = parse_config([*SYNTH, "-b", "64"])
    assert cfg.peak_lr(world_size=8) == pytest.approx(0.1 * 64 * 8 / 256)
    assert parse_config([*SYNTH, "--lr", "0.5"]).peak_lr(world_size=8) == 0.5
    assert parse_config([*SYNTH, "--base-lr", "0.2", "-b", "128"]).peak_lr(2) == pytest.approx(0.2)


def test_torchvision_scheduler_names_are_accepted():
    assert parse_config([*SYNTH, "--lr-scheduler", "cosineannealinglr"]).lr_scheduler == "cosine"
    assert parse_config([*SYNTH, "--lr-scheduler", "steplr"]).lr_scheduler == "step"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--data-path is required"),
        ([*SYNTH, "--precision", "fp8"], "invalid choice: 'fp8'"),
        ([*SYNTH, "-b", "0"], "^argument -b/--batch-size: must be a whole number of at least 1, "
         "got '0'$"),
        ([*SYNTH, "--epochs", "x"], "^argument --epochs: must be a whole number of at least 1, "
         "got 'x'$"),  # not argparse's "invalid _positive_int value"
        ([*SYNTH, "--metrics-port", "70000"], "must be a port number \\(0 to 65535\\), got"),
        ([*SYNTH, "--lr-steps", "60", "30"], "--lr-steps must increase"),
        ([*SYNTH, "--epochs", "5", "--lr-warmup-epochs", "5"], "must be shorter than --epochs"),
        ([*SYNTH, "--nnodes", "2", "--node-rank", "2"], "--node-rank must be in 0..1"),
        ([*SYNTH, "--lr-scheduler", "poly"], "invalid choice 'poly'"),
        ([*SYNTH, "--no-such-option"], "unrecognized arguments: --no-such-option"),
        ([*SYNTH, "--compile-mode", "reduce-overhead"],
         "^--compile-mode reduce-overhead needs --compile$"),
        ([*SYNTH, "--compile", "--compile-mode", "fast"], "invalid choice: 'fast'"),
    ],
)
def test_bad_options_are_configuration_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_compile_mode_goes_with_compile():
    cfg = parse_config([*SYNTH, "--compile", "--compile-mode", "reduce-overhead"])
    assert (cfg.compile, cfg.compile_mode) == (True, "reduce-overhead")
    assert parse_config(SYNTH).compile_mode == "default"


def test_global_batch_must_cover_and_divide_the_world():
    cfg = parse_config([*SYNTH, "--global-batch-size", "6"])
    validate_world(cfg, 3)
    assert cfg.per_process_batch(3) == 2
    with pytest.raises(ConfigError, match="smaller than the 8 processes"):
        validate_world(cfg, 8)
    with pytest.raises(ConfigError, match="does not divide evenly over 4 processes"):
        validate_world(cfg, 4)


def test_one_image_per_process_cannot_train_batchnorm():
    with pytest.raises(ConfigError, match="^--batch-size 1 per process: BatchNorm cannot train "
                       "on one image; use at least 2$") as exc:
        parse_config([*SYNTH, "-b", "1"])
    assert exc.value.exit_code == EXIT_CONFIG
    parse_config([*SYNTH, "-b", "1", "--test-only"])  # evaluation uses the running statistics
    cfg = parse_config([*SYNTH, "--global-batch-size", "4"])
    validate_world(cfg, 2)
    with pytest.raises(ConfigError, match="^--global-batch-size 4 over 4 processes is 1 image "
                       "per process: BatchNorm cannot train on one image; use at least 2$"):
        validate_world(cfg, 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start-epoch", "3"], "^--start-epoch 3: the epoch to start from is the checkpoint's"),
        (["--world-size", "8"], "^--world-size 8: the processes are --nnodes x --nproc-per-node"),
        (["--dist-url", "tcp://10.0.0.1:23456"], "^--dist-url tcp://10.0.0.1:23456: processes "
         "meet through torchrun's environment"),
        (["--backend", "tensor"], "^--backend tensor: --data-backend pytorch decodes with PIL"),
    ],
)
def test_torchvision_options_done_another_way_here_name_that_way(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config([*SYNTH, *argv])


def test_torchvision_options_done_another_way_here_accept_their_default():
    parse_config([*SYNTH, "--start-epoch", "0", "--world-size", "1", "--dist-url", "env://",
                  "--backend", "PIL"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train-crop-scale", "0.5", "0.2"], "--train-crop-scale must be 0 < MIN <= MAX <= 1"),
        (["--train-crop-scale", "0", "1"], "--train-crop-scale must be 0 < MIN <= MAX <= 1"),
        (["--train-crop-scale", "0.5", "2"], "must be a fraction between 0 and 1, got '2'"),
        (["--hflip", "1.5"], "--hflip: must be a probability between 0 and 1, got '1.5'"),
        (["--random-erase", "-0.1"], "must be a probability between 0 and 1"),
        (["--auto-augment", "foo"], "invalid choice 'foo' \\(choose from ra, ta_wide, augmix"),
        (["--opt", "lamb"], "invalid choice 'lamb' \\(choose from sgd, sgd_nesterov, rmsprop, "
         "adamw\\)"),
        (["--lr-warmup-method", "cosine"], "invalid choice 'cosine'"),
        (["--progressive-resize-from", "256"], "--progressive-resize-from 256 is larger than "
         "--train-crop-size 224"),
        (["--progressive-resize-ramp", "0.8", "0.5"], "must not end before it starts"),
        (["--precise-bn-images", "-1"], "--precise-bn-images must not be negative"),
    ],
)
def test_bad_augmentation_and_schedule_options(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config([*SYNTH, *argv])


def test_torchvision_spellings_are_case_insensitive_as_there():
    cfg = parse_config([*SYNTH, "--lr-scheduler", "CosineAnnealingLR", "--opt", "SGD",
                        "--interpolation", "BICUBIC", "--auto-augment", "TA_WIDE"])
    assert (cfg.lr_scheduler, cfg.opt, cfg.interpolation, cfg.auto_augment) == (
        "cosine", "sgd", "bicubic", "ta_wide")
    nesterov = parse_config([*SYNTH, "--opt", "sgd_nesterov"])
    assert (nesterov.opt, nesterov.nesterov) == ("sgd", True)


def test_recipe_presets_carry_their_published_settings():
    v1 = parse_config(["--preset", "torchvision-v1", *SYNTH])
    assert (v1.nproc_per_node * v1.batch_size, v1.lr, v1.lr_scheduler, v1.step_milestones(),
            v1.warmup_epochs(8)) == (256, 0.1, "step", (30, 60), 0.0)
    v2 = parse_config(["--preset", "torchvision-v2", *SYNTH])
    assert (v2.nproc_per_node * v2.batch_size, v2.lr, v2.epochs, v2.auto_augment, v2.ra_reps,
            v2.train_crop_size, v2.val_resize_size, v2.model_ema) == (
        1024, 0.5, 600, "ta_wide", 4, 176, 232, True)
    paddle = parse_config(["--preset", "paddleclas-fp32-4cards", *SYNTH])
    assert (paddle.epochs, paddle.step_milestones()) == (120, (30, 60, 90))
    ffcv = parse_config(["--preset", "ffcv-16epochs", *SYNTH])
    assert (ffcv.epochs, ffcv.progressive_resize_from, ffcv.train_crop_size, ffcv.lr_scheduler) \
        == (16, 160, 192, "linear")
