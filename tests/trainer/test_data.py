import shutil

import pytest
import torch
from jpeg_datasets import make_folder_dataset, write_lists

from resnet50_trainer.config import parse_config
from resnet50_trainer.contract import EXIT_CONFIG
from resnet50_trainer.data import (
    ImageSamples,
    ShardSampler,
    build_loaders,
    discover,
    train_transform,
    val_transform,
)
from resnet50_trainer.distributed import Placement
from resnet50_trainer.errors import ConfigError, DataError

CPU = torch.device("cpu")


def test_folder_layout_gives_sorted_classes_shared_by_train_and_val(folder_dataset):
    index = discover(folder_dataset)
    assert index.layout == "folder"
    assert index.classes == ["n01440764", "n01440765", "n01440766"]
    assert len(index.train) == 3 * 8 and len(index.val) == 3 * 3
    # A val image of class n01440765 carries the same index as the train images of that class.
    assert {label for path, label in index.val if "/n01440765/" in path} == {1}
    assert {label for path, label in index.train if "/n01440765/" in path} == {1}


@pytest.mark.parametrize("with_prefix", [True, False])
def test_list_layout_with_and_without_split_prefix(tmp_path, with_prefix):
    root = make_folder_dataset(tmp_path / "ds", classes=2, train_per_class=2, val_per_class=1)
    write_lists(root, with_split_prefix=with_prefix)
    index = discover(root)
    assert index.layout == "list" and index.num_classes == 2
    assert all(p.startswith(str(root / "train")) for p, _ in index.train)
    assert all(p.startswith(str(root / "val")) for p, _ in index.val)
    assert sorted(label for _, label in index.val) == [0, 1]


def test_missing_data_path(tmp_path):
    with pytest.raises(ConfigError, match=f"data path {tmp_path / 'nope'} does not exist"):
        discover(tmp_path / "nope")


def test_empty_data_path(tmp_path):
    with pytest.raises(ConfigError, match="has no train/ folder and no train_list.txt"):
        discover(tmp_path)


def test_split_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(ConfigError, match="train has no class folders"):
        discover(tmp_path)


def test_class_folders_that_differ_between_train_and_val(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", classes=3, train_per_class=1, val_per_class=1)
    shutil.move(root / "val" / "n01440766", root / "val" / "n09999999")
    with pytest.raises(ConfigError, match="only in train: n01440766; only in val: n09999999"):
        discover(root)


def test_empty_class_folder(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", classes=2, train_per_class=1, val_per_class=1)
    for f in (root / "train" / "n01440765").iterdir():
        f.unlink()
    with pytest.raises(ConfigError, match="n01440765 holds no images"):
        discover(root)


def test_malformed_list_line_reports_file_and_line(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", classes=2, train_per_class=2, val_per_class=1)
    write_lists(root, with_split_prefix=True)
    lines = (root / "train_list.txt").read_text().splitlines()
    lines[2] = "train/n01440765/n01440765_0.JPEG one"
    (root / "train_list.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"train_list.txt:3: expected 'relative/path label'"):
        discover(root)


def test_list_entry_that_is_nowhere(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", classes=1, train_per_class=1, val_per_class=1)
    (root / "train_list.txt").write_text("\nmissing.JPEG 0\n")
    (root / "val_list.txt").write_text("val/n01440764/x.JPEG 0\n")
    with pytest.raises(ConfigError, match=r"train_list.txt:2: missing.JPEG is neither under"):
        discover(root)


def test_val_label_unknown_to_training(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", classes=2, train_per_class=1, val_per_class=1)
    write_lists(root, with_split_prefix=True)
    (root / "val_list.txt").write_text("val/n01440764/ILSVRC2012_val_00000000.JPEG 7\n")
    with pytest.raises(ConfigError, match="has label 7, but the training list has only labels"):
        discover(root)


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.JPEG"
    bad.write_bytes(b"not a jpeg")
    cfg = parse_config(["--synthetic", "--val-resize-size", "36", "--val-crop-size", "32"])
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        ImageSamples([(str(bad), 0)], val_transform(cfg))[0]


def test_transforms_give_normalised_crops(folder_dataset):
    index = discover(folder_dataset)
    cfg = parse_config(["--synthetic", "--train-crop-size", "32", "--val-resize-size", "36",
                        "--val-crop-size", "28"])
    image, label = ImageSamples(index.train, train_transform(cfg))[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 0
    assert image.mean().abs() < 3  # normalised, not raw 0..255
    image, _ = ImageSamples(index.val, val_transform(cfg))[0]
    assert image.shape == (3, 28, 28)


@pytest.mark.parametrize(("size", "world"), [(7, 2), (50, 3), (2, 4), (8, 8)])
def test_shards_cover_every_index_exactly_once(size, world):
    seen = [i for rank in range(world) for i in ShardSampler(size, rank, world)]
    assert sorted(seen) == list(range(size))


def test_loaders_shard_validation_exactly_and_training_evenly(odd_val_dataset):
    cfg = parse_config(["--data-path", str(odd_val_dataset), "--no-cache-dataset", "-b", "2",
                        "-j", "0", "--train-crop-size", "32", "--val-resize-size", "32",
                        "--val-crop-size", "32"])
    per_rank = [build_loaders(cfg, Placement(rank, rank, 2, CPU)) for rank in range(2)]
    assert [lo.train_steps for lo in per_rank] == [2, 2]  # 8 images / (2 x 2)
    val_counts = [sum(len(t) for _, t in lo.val) for lo in per_rank]
    assert val_counts == [4, 3] and per_rank[0].val_size == 7


def test_training_set_smaller_than_a_global_batch(folder_dataset):
    cfg = parse_config(["--data-path", str(folder_dataset), "--no-cache-dataset", "-b", "16",
                        "-j", "0"])
    with pytest.raises(ConfigError, match=r"24 images, fewer than one global batch \(16 per"):
        build_loaders(cfg, Placement(0, 0, 2, CPU))


def test_synthetic_backend_needs_no_disk_and_shards_validation():
    cfg = parse_config(["--synthetic", "--synthetic-train-size", "40", "--synthetic-val-size",
                        "11", "-b", "4", "--num-classes", "10", "--train-crop-size", "16",
                        "--val-crop-size", "16"])
    loaders = [build_loaders(cfg, Placement(r, r, 2, CPU)) for r in range(2)]
    assert loaders[0].train_steps == 5 and loaders[0].num_classes == 10
    images, labels = next(iter(loaders[0].train))
    assert images.shape == (4, 3, 16, 16) and labels.max() < 10
    assert sum(len(t) for lo in loaders for _, t in lo.val) == 11


def one_line_config_error(root, num_classes=None) -> str:
    """discover()'s error: exit 2 (not a data error), one line, no traceback."""
    with pytest.raises(ConfigError) as exc:
        discover(root, num_classes)
    assert exc.value.exit_code == EXIT_CONFIG and "\n" not in str(exc.value)
    return str(exc.value)


def list_dataset(tmp_path, train_labels, val_labels=(0,)):
    """One image per line, labelled as given (the images need only exist)."""
    root = make_folder_dataset(tmp_path / "ds", classes=1, train_per_class=1, val_per_class=1)
    image = next((root / "train" / "n01440764").iterdir()).relative_to(root)
    val_image = next((root / "val" / "n01440764").iterdir()).relative_to(root)
    (root / "train_list.txt").write_text("".join(f"{image} {n}\n" for n in train_labels))
    (root / "val_list.txt").write_text("".join(f"{val_image} {n}\n" for n in val_labels))
    return root


def test_list_not_in_utf8_names_the_line_and_column(tmp_path):
    root = list_dataset(tmp_path, [0, 1])
    lines = (root / "val_list.txt").read_bytes() + "val/caf\u00e9.JPEG 1\n".encode("latin-1")
    (root / "val_list.txt").write_bytes(lines)
    assert one_line_config_error(root) == (
        f"{root / 'val_list.txt'}:2: not UTF-8 (byte 0xe9 at column 8); save the list as UTF-8")


def test_list_with_a_utf8_bom_reads_like_without(tmp_path):
    root = list_dataset(tmp_path, [0, 1])
    (root / "train_list.txt").write_bytes(b"\xef\xbb\xbf" + (root / "train_list.txt").read_bytes())
    index = discover(root)
    assert index.num_classes == 2 and "\ufeff" not in index.train[0][0]
    # And a later bad byte is still counted in bytes from the start of its line.
    (root / "train_list.txt").write_bytes(b"\xef\xbb\xbf\xff 0\n")
    assert ":1: not UTF-8 (byte 0xff at column 4)" in one_line_config_error(root)


def test_labels_starting_at_1_are_refused_plainly(tmp_path):
    root = list_dataset(tmp_path, [1, 2, 3], val_labels=[1])
    assert one_line_config_error(root) == (
        f"{root / 'train_list.txt'}: labels start at 1: they must start at 0 (subtract 1 from "
        "every label of both lists), or give --num-classes 4 if labels below 1 are meant to "
        "be unused")
    assert discover(root, num_classes=4).num_classes == 4


def test_label_gaps_are_listed_with_the_largest_label(tmp_path):
    root = list_dataset(tmp_path, [0, 1, 999, 1])  # a typo for 2
    assert one_line_config_error(root) == (
        f"{root / 'train_list.txt'}: labels 0..999 expected (1 + the largest), 997 missing: "
        "2-998; the largest, 999, is on line 3; give --num-classes if the gaps are meant")
    root = list_dataset(tmp_path / "many", [0, *range(2, 20, 2)])
    assert "9 missing: 1, 3, 5, 7, 9 and 4 more;" in one_line_config_error(root)


def test_labels_beyond_the_given_num_classes_name_their_line(tmp_path):
    root = list_dataset(tmp_path, [0, 2, 1])
    assert discover(root, num_classes=5).num_classes == 3  # gaps allowed when given
    assert one_line_config_error(root, num_classes=2) == (
        f"{root / 'train_list.txt'}:2: has label 2, but --num-classes is 2 (labels 0..1)")
    root = list_dataset(tmp_path / "val", [0, 1], val_labels=[0, 4])
    assert one_line_config_error(root, num_classes=3) == (
        f"{root / 'val_list.txt'}:2: has label 4, but --num-classes is 3 (labels 0..2)")


def test_negative_label_names_its_line(tmp_path):
    root = list_dataset(tmp_path, [0, -1])
    assert one_line_config_error(root) == (
        f"{root / 'train_list.txt'}:2: label -1 is negative; labels start at 0")


def test_loaders_pass_num_classes_to_the_label_check(tmp_path):
    root = list_dataset(tmp_path, [0, 3])
    args = ["--data-path", str(root), "--no-cache-dataset", "-b", "2", "-j", "0"]
    with pytest.raises(ConfigError, match="2 missing: 1-2;"):
        build_loaders(parse_config(args), Placement(0, 0, 1, CPU))
    cfg = parse_config([*args, "--num-classes", "4"])
    assert build_loaders(cfg, Placement(0, 0, 1, CPU)).num_classes == 4
