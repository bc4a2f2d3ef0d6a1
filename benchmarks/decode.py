"""JPEG decode + training augmentation per CPU core, for each candidate library.

    python benchmarks/decode.py --json runs/decode.json               # every candidate
    python benchmarks/decode.py --candidates pillow pillow+draft --images 200 --windows 3

What one core does for one training image: decode the JPEG (bytes already in memory, so
no disk), RandomResizedCrop to --crop (scale 0.08-1, ratio 3/4-4/3, bilinear, antialiased),
a horizontal flip with probability 0.5, a float32 CHW tensor normalised with ImageNet's
mean and std, and the images of a batch (--batch) stacked. Rows:
  pillow            the trainer's pytorch backend: data.decode.read_rgb (PIL) and
                    data.transforms.train_transform (torchvision.transforms, v1 unless
                    --use-v2) inside seeds.seeded, as its DataLoader workers run it
  pillow+draft      the same with Image.draft: the crop is drawn first from the full size
                    (RandomResizedCrop.get_params), then libjpeg decodes at 1/2, 1/4 or 1/8
                    scale, the largest that keeps the crop >= --crop px on both sides
  pillow-numpy      PIL decode, one resize of the crop box, flip, normalise with numpy (no
                    torch): the reference for pillow-simd, with the same code
  pillow-simd       pillow-numpy under the pillow-simd fork (its own interpreter, see below)
  (+draft)          pillow-numpy+draft and pillow-simd+draft add Image.draft
  torchvision-cpu   torchvision.io.decode_jpeg (libjpeg-turbo) + transforms.v2 on uint8
  torchcodec        torchcodec.decoders.decode_jpeg on the CPU + the same transforms.v2
  nvimgcodec-cpu    nvImageCodec's CPU backend (libjpeg-turbo), planar RGB, batched
                    decode + the same transforms.v2
  nvimgcodec-roi    the same, decoding only the crop's region (a sub code stream), then a
                    resize of that region
  dali-cpu          an NVIDIA DALI CPU-only pipeline: decoders.image_random_crop (decodes
                    only the crop's region), resize, crop_mirror_normalize

Each candidate runs in its own child process pinned with sched_setaffinity to one CPU
(--cpu), with torch.set_num_threads(1), DALI num_threads=1, nvImageCodec
max_num_cpu_threads=1, OMP/MKL/OpenBLAS at 1 thread and no GPU visible. After --warmup
batches, --windows windows of --seconds-per-window seconds (or --images-per-window images)
are timed; img/s per core is their median. A candidate whose library does not import is
reported "not installed" with the import error; each child may use another interpreter
(--python-for), so libraries that cannot share one environment still share one report.
The projection: --node-cores cores x img/s per core against --gpus x --gpu-rate img/s
(16 cores; 8 GPUs x 4,800 = 38,400 img/s), and the cores per GPU that --gpu-rate needs.

The JPEG set (--jpeg-dir/train/<photo>/<photo>_NNNNNN.JPEG) is made from the colour
photographs scikit-image ships (skimage.data): a random crop of one photo resized to a
frequent ImageNet size (500x375 most often), an unsharp mask, small brightness, contrast
and colour jitter, sensor-like grain (--grain), a random flip, baseline JPEG at --quality
90 with 4:2:0 chroma (Pillow). The grain and sharpening bring the files from ~47 KB to
~90 KB (ImageNet: ~110 KB): see GRAIN. Same arguments, same files; files already there are
kept, and --jpeg-dir/recipe.json refuses a set made with other arguments. Only making the
set needs scikit-image.

Environments (never install into the project's .venv), from the repository root:
    # nv: the project's packages through a .pth, plus DALI, nvImageCodec, TorchCodec
    python3.11 -m venv runs/venv-nv
    printf '%s\\n' "$PWD/.venv/lib/python3.11/site-packages" "$PWD/trainer" \\
        > runs/venv-nv/lib/python3.11/site-packages/project.pth
    runs/venv-nv/bin/pip install nvidia-dali-cuda130 nvidia-nvimgcodec-cu13 \\
        torchcodec scikit-image                  # resolves against the .venv's torch
    # simd: pillow-simd (built from source, AVX2) and numpy only
    python3.11 -m venv runs/venv-simd
    runs/venv-simd/bin/pip install numpy
    CC="cc -mavx2" runs/venv-simd/bin/pip install --no-binary :all: pillow-simd
and the full run:
    runs/venv-nv/bin/python benchmarks/decode.py --json runs/decode.json \\
        --python-for pillow-simd,pillow-simd+draft=runs/venv-simd/bin/python
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import io
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_JPEG_DIR = "runs/decode-jpegs"
JPEG_QUALITY = 90
# skimage's photos are ~512 px, so most crops are enlarged a little and come out smoother
# than ImageNet's downscaled camera pictures: ~47 KB (0.25 byte/px) against ImageNet's ~110
# KB (~0.6 byte/px). An unsharp mask and sensor-like grain (luminance sigma GRAIN, chroma
# GRAIN/2, in 0-255 steps) bring it to ~90 KB (0.47 byte/px) at quality 90; decoding
# time grows with the entropy-coded bytes, so smooth files would flatter every candidate.
GRAIN = 8.0
# skimage.data's colour photographs (coins, camera, moon... are grey; color, logo are not
# photographs); stereo_motorcycle gives (left, right, disparity): the left view.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "stereo_motorcycle")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults, the trainer's too
RATIO = (3 / 4, 4 / 3)
# ImageNet-1k's training JPEGs, for comparison: ~110 KB mean at ~400x350 mean size; about
# 0.6 byte per pixel (the mean image is nearer 470x390, ~0.18 MP).
IMAGENET_MEAN_KILOBYTES = 110
IMAGENET_BYTES_PER_PIXEL = 0.6
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


# ---------------------------------------------------------------- the JPEG set


def _weighted(rng, items: Sequence, weights: Sequence[float]):
    total = sum(weights)
    return items[rng.choice(len(items), p=[w / total for w in weights])]


def _plan(seed: int, index: int, photos: Sequence[str]) -> tuple[Any, str]:
    """The random stream of image `index` and its photo: both functions of (seed, index)."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    return rng, photos[rng.integers(len(photos))]


def jpeg_path(root: Path, photo: str, index: int) -> Path:
    return root / "train" / photo / f"{photo}_{index:06d}.JPEG"


_PHOTO_CACHE: dict[str, Any] = {}


def load_photo(name: str):
    """skimage.data's photograph `name` as an RGB PIL image (kept for the next call)."""
    if name not in _PHOTO_CACHE:
        import skimage.data
        from PIL import Image

        pixels = getattr(skimage.data, name)()
        if isinstance(pixels, tuple):  # stereo_motorcycle: (left, right, disparity)
            pixels = pixels[0]
        _PHOTO_CACHE[name] = Image.fromarray(pixels).convert("RGB")
    return _PHOTO_CACHE[name]


@dataclass(frozen=True)
class JpegRecipe:
    """What decides the files besides their index: a set is made with one recipe."""

    seed: int = 0
    quality: int = JPEG_QUALITY
    grain: float = GRAIN
    sharpen: bool = True
    photos: tuple[str, ...] = PHOTOS


def write_jpeg(root: Path, index: int, recipe: JpegRecipe) -> None:
    """Image `index`: a crop of a photo at an ImageNet size, sharpened, jittered, grainy,
    maybe flipped."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageFilter

    rng, photo = _plan(recipe.seed, index, recipe.photos)
    # throughput.py's ImageNet sizes; imported here, not at the top: the children that only
    # decode (pillow-simd's environment) have no torch, which throughput.py needs.
    from throughput import IMAGENET_LIKE_SIZES, SIZE_WEIGHTS

    width, height = _weighted(rng, IMAGENET_LIKE_SIZES, SIZE_WEIGHTS)
    source = load_photo(photo)
    # The largest box of the target's aspect ratio, then 40-100% of its area somewhere:
    # most photos are about the target's size, so files differ by content, not by blur.
    box_w = min(source.width, source.height * width / height)
    box_h = box_w * height / width
    factor = math.sqrt(rng.uniform(0.4, 1.0))
    box_w, box_h = box_w * factor, box_h * factor
    left = rng.uniform(0, source.width - box_w)
    top = rng.uniform(0, source.height - box_h)
    image = source.resize((width, height), Image.Resampling.LANCZOS,
                          box=(left, top, left + box_w, top + box_h))
    if recipe.sharpen:
        image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=100, threshold=2))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(rng.uniform(0.85, 1.15))
    if recipe.grain > 0:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = (pixels + rng.normal(0, recipe.grain, (height, width, 1))
                  + rng.normal(0, recipe.grain / 2, (height, width, 3)))
        image = Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    path = jpeg_path(root, photo, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, "JPEG", quality=recipe.quality, subsampling="4:2:0", optimize=False,
               progressive=False)
    tmp.rename(path)


def _write_jpegs(root: Path, indices: Sequence[int], recipe: JpegRecipe) -> None:
    for index in indices:
        write_jpeg(root, index, recipe)


def available_photos() -> list[str]:
    """The PHOTOS this scikit-image has; ImportError without scikit-image."""
    import skimage.data

    return [name for name in PHOTOS if hasattr(skimage.data, name)]


RECIPE_FILE = "recipe.json"


def make_jpeg_set(root: Path, count: int, recipe: JpegRecipe, workers: int = 1) -> list[Path]:
    """The paths of `count` JPEGs in root/train/, written where missing. root/recipe.json
    keeps the set's recipe: another recipe in the same folder is an error, not a mix."""
    wanted = asdict(recipe) | {"photos": list(recipe.photos)}
    recipe_file = root / RECIPE_FILE
    if recipe_file.exists():
        found = json.loads(recipe_file.read_text())
        if found != wanted:
            raise RuntimeError(f"{root} holds JPEGs made with {found}, not {wanted}: give "
                               "another --jpeg-dir")
    paths = [jpeg_path(root, _plan(recipe.seed, i, recipe.photos)[1], i) for i in range(count)]
    todo = [i for i, path in enumerate(paths) if not path.exists()]
    if todo:
        missing = set(recipe.photos) - set(available_photos())
        if missing:
            raise RuntimeError(f"this scikit-image lacks {', '.join(sorted(missing))}: the "
                               "same arguments would give other files")
        root.mkdir(parents=True, exist_ok=True)
        recipe_file.write_text(json.dumps(wanted, indent=2) + "\n")
        chunks = [todo[i::max(1, workers)] for i in range(max(1, workers))]
        with ProcessPoolExecutor(max(1, workers)) as pool:
            for done in [pool.submit(_write_jpegs, root, c, recipe) for c in chunks if c]:
                done.result()
    return paths


def describe_jpegs(root: Path, paths: Sequence[Path], recipe: JpegRecipe) -> dict:
    from PIL import Image

    sizes: dict[str, int] = {}
    photos: dict[str, int] = {}
    pixels = []
    for path in paths:
        with Image.open(path) as img:
            key = f"{img.width}x{img.height}"
            pixels.append(img.width * img.height)
        sizes[key] = sizes.get(key, 0) + 1
        photos[path.parent.name] = photos.get(path.parent.name, 0) + 1
    nbytes = [path.stat().st_size for path in paths]
    return {
        "dir": str(root), "count": len(paths),
        "mean_kilobytes": round(statistics.mean(nbytes) / 1000, 1),
        "median_kilobytes": round(statistics.median(nbytes) / 1000, 1),
        "mean_megapixels": round(statistics.mean(pixels) / 1e6, 3),
        "bytes_per_pixel": round(sum(nbytes) / sum(pixels), 3),
        "sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        "photos": dict(sorted(photos.items())),
        "chroma": "4:2:0", "baseline": True, "recipe": asdict(recipe),
        "imagenet_mean_kilobytes": IMAGENET_MEAN_KILOBYTES,
        "imagenet_bytes_per_pixel": IMAGENET_BYTES_PER_PIXEL,
    }


# ---------------------------------------------------------------- crops shared by candidates


def crop_params(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop box, torchvision's algorithm with
    the default scale and ratio, for the candidates that run without torch."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    ratio = width / height  # torchvision's fallback: the central crop within the ratios
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draft_reduction(crop_w: int, crop_h: int, out: int) -> int:
    """The largest libjpeg DCT reduction (8, 4, 2) that keeps the crop >= out px on both
    sides, else 1."""
    return next((s for s in (8, 4, 2) if crop_w // s >= out and crop_h // s >= out), 1)


def draft(img, crop_w: int, crop_h: int, out: int) -> int:
    """Let libjpeg decode `img` (opened, not loaded) at a reduced scale; returns it.
    PIL picks the largest s in 8, 4, 2, 1 with size // requested >= s, hence the floor."""
    s = draft_reduction(crop_w, crop_h, out)
    if s > 1:
        img.draft("RGB", (img.width // s, img.height // s))
    return s


# ---------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """Built in the child: prepare turns the file bytes into the library's input (untimed),
    run_batch decodes and augments one batch into a (B, 3, crop, crop) float32 batch."""

    run_batch: Callable[[list], Any]
    prepare: Callable[[list[bytes]], list] = list
    note: str = ""


def _torch_setup() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def _v2_train(crop: int) -> Callable:
    """RandomResizedCrop + flip + float + Normalize on a uint8 CHW tensor (transforms.v2)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip(),
                       v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD), v2.ToPureTensor()])


def _v2_finish(crop: int) -> Callable:
    """Resize (the region is the crop already) + flip + float + Normalize (transforms.v2)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize((crop, crop), antialias=True), v2.RandomHorizontalFlip(),
                       v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD), v2.ToPureTensor()])


def _tensors(data: list[bytes]) -> list:
    import torch

    return [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]


def build_pillow(crop: int, use_v2: bool) -> Candidate:
    import torch

    _torch_setup()
    try:
        from resnet50_trainer.config import TrainConfig
        from resnet50_trainer.data.decode import read_rgb
        from resnet50_trainer.data.transforms import train_transform
        from resnet50_trainer.seeds import seeded
    except ImportError as exc:  # the row would not be the trainer's path: say so
        raise ImportError(f"resnet50_trainer: {exc}") from exc
    transform = train_transform(TrainConfig(train_crop_size=crop, use_v2=use_v2))
    counter = iter(range(1 << 62))

    def run_batch(batch: list[bytes]):
        images = []
        for data in batch:
            image, _ = read_rgb((io.BytesIO(data), 0))  # open + convert, as in the workers
            with seeded(next(counter)):  # SizedImageSamples: each sample its own seed
                images.append(transform(image))
        return torch.stack(images)

    return Candidate(run_batch, note=f"trainer pytorch backend, transforms "
                     f"{'v2' if use_v2 else 'v1'}")


def build_pillow_draft(crop: int, use_v2: bool) -> tuple[Candidate, dict]:
    import torch
    from PIL import Image

    _torch_setup()
    if use_v2:
        from torchvision.transforms import v2 as T
    else:
        from torchvision import transforms as T
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms import functional as F

    to_float = T.ToDtype(torch.float, scale=True) if use_v2 else T.ConvertImageDtype(torch.float)
    finish = T.Compose([T.RandomHorizontalFlip(), T.PILToTensor(), to_float,
                        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    reductions: dict[int, int] = {}

    def run_batch(batch: list[bytes]):
        images = []
        for data in batch:
            with Image.open(io.BytesIO(data)) as img:
                top, left, h, w = RandomResizedCrop.get_params(img, list(SCALE), list(RATIO))
                s = draft(img, w, h, crop)
                reductions[s] = reductions.get(s, 0) + 1
                image = img.convert("RGB")
            # The box in the reduced image: draft maps full-size coordinates by 1/s.
            image = F.resized_crop(image, round(top / s), round(left / s), round(h / s),
                                   round(w / s), [crop, crop],
                                   interpolation=T.InterpolationMode.BILINEAR, antialias=True)
            images.append(finish(image))
        return torch.stack(images)

    return Candidate(run_batch, note="trainer transforms with Image.draft"), reductions


def build_pillow_numpy(crop: int, use_draft: bool, want_simd: bool) -> tuple[Candidate, dict]:
    import numpy as np
    import PIL
    from PIL import Image

    simd = _has_distribution("pillow-simd")
    if want_simd and not simd:
        raise ImportError(f"PIL is Pillow {PIL.__version__}, not pillow-simd (give this "
                          "candidate the simd interpreter with --python-for)")
    rng = random.Random(0)
    # x / 255 - mean) / std as one multiply-add per value
    scale = np.array([1 / (255 * s) for s in IMAGENET_STD], dtype=np.float32)
    shift = np.array([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)],
                     dtype=np.float32)
    reductions: dict[int, int] = {}

    def run_batch(batch: list[bytes]):
        out = np.empty((len(batch), 3, crop, crop), dtype=np.float32)
        for i, data in enumerate(batch):
            with Image.open(io.BytesIO(data)) as img:
                top, left, h, w = crop_params(img.width, img.height, rng)
                s = draft(img, w, h, crop) if use_draft else 1
                reductions[s] = reductions.get(s, 0) + 1
                image = img.convert("RGB")
            # One resampling pass over the crop box, in reduced coordinates after a draft.
            image = image.resize((crop, crop), Image.Resampling.BILINEAR,
                                 box=(left / s, top / s, (left + w) / s, (top + h) / s))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            pixels = np.asarray(image, dtype=np.float32)
            pixels *= scale
            pixels -= shift
            out[i] = pixels.transpose(2, 0, 1)
        return out

    name = "pillow-simd" if simd else "Pillow"
    note = f"{name}, PIL resize(box) + numpy" + (", draft" if use_draft else "")
    return Candidate(run_batch, note=note), reductions if use_draft else None


def build_torchvision(crop: int) -> Candidate:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    _torch_setup()
    transform = _v2_train(crop)

    def run_batch(batch: list):
        return torch.stack([transform(decode_jpeg(d, mode=ImageReadMode.RGB)) for d in batch])

    return Candidate(run_batch, prepare=_tensors, note="decode_jpeg + transforms.v2")


def build_torchcodec(crop: int) -> Candidate:
    import torch

    _torch_setup()
    from torchcodec.decoders import decode_jpeg  # raises ImportError in older versions

    transform = _v2_train(crop)

    def run_batch(batch: list):
        return torch.stack([transform(decode_jpeg(d, mode="RGB")) for d in batch])

    return Candidate(run_batch, prepare=_tensors, note="decoders.decode_jpeg + transforms.v2")


def _nvimgcodec_decoder():
    import nvidia.nvimgcodec as nvimgcodec

    decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                 max_num_cpu_threads=1,
                                 backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])
    # Planar RGB: CHW as torch wants it, with no transpose.
    params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.SRGB,
                                     sample_format=nvimgcodec.SampleFormat.P_RGB)
    return nvimgcodec, decoder, params


def _as_tensor(image):
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image))


def build_nvimgcodec(crop: int, roi: bool) -> Candidate:
    import torch

    _torch_setup()
    nvimgcodec, decoder, params = _nvimgcodec_decoder()
    transform = _v2_finish(crop) if roi else _v2_train(crop)
    rng = random.Random(0)

    def region(stream):
        top, left, h, w = crop_params(stream.width, stream.height, rng)
        return stream.get_sub_code_stream(
            region=nvimgcodec.Region(start=(top, left), end=(top + h, left + w)))

    def run_batch(batch: list[bytes]):
        streams = [nvimgcodec.CodeStream(d) for d in batch]
        if roi:
            streams = [region(s) for s in streams]
        decoded = decoder.decode(streams, params=params)
        if any(image is None for image in decoded):
            raise RuntimeError("nvImageCodec could not decode an image")
        return torch.stack([transform(_as_tensor(image)) for image in decoded])

    note = ("region of the crop only, then resize + transforms.v2" if roi
            else "batched CPU decode + transforms.v2")
    return Candidate(run_batch, note=note)


def build_dali(crop: int, batch_size: int, seed: int) -> Candidate:
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, seed=seed,
                  prefetch_queue_depth=1)
    def pipeline():
        jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
        images = fn.decoders.image_random_crop(
            jpegs, device="cpu", output_type=types.RGB, random_area=list(SCALE),
            random_aspect_ratio=list(RATIO), num_attempts=10)
        images = fn.resize(images, resize_x=crop, resize_y=crop, antialias=True,
                           interp_type=types.INTERP_LINEAR)
        return fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW",
            mean=[255 * m for m in IMAGENET_MEAN], std=[255 * s for s in IMAGENET_STD],
            mirror=fn.random.coin_flip(probability=0.5))

    pipe = pipeline()
    pipe.build()

    def prepare(data: list[bytes]) -> list:
        return [np.frombuffer(d, dtype=np.uint8) for d in data]

    def run_batch(batch: list):
        pipe.feed_input("jpegs", batch)
        (out,) = pipe.run()
        return np.asarray(out.as_tensor())  # a dense (B, 3, crop, crop) batch (a view)

    return Candidate(run_batch, prepare=prepare, note="image_random_crop (ROI decode), "
                     "resize, crop_mirror_normalize; CPU-only pipeline")


# name -> the library whose version the row reports
CANDIDATES = {
    "pillow": "Pillow",
    "pillow+draft": "Pillow",
    "pillow-numpy": "Pillow",
    "pillow-numpy+draft": "Pillow",
    "pillow-simd": "pillow-simd",
    "pillow-simd+draft": "pillow-simd",
    "torchvision-cpu": "torchvision",
    "torchcodec": "torchcodec",
    "nvimgcodec-cpu": "nvidia-nvimgcodec",
    "nvimgcodec-roi": "nvidia-nvimgcodec",
    "dali-cpu": "nvidia-dali",
}


def build(name: str, crop: int, batch: int, seed: int,
          use_v2: bool) -> tuple[Candidate, dict | None]:
    """Candidate `name`, and the dict its draft reductions are counted in (if any)."""
    if name == "pillow":
        return build_pillow(crop, use_v2), None
    if name == "pillow+draft":
        return build_pillow_draft(crop, use_v2)
    if name.startswith(("pillow-numpy", "pillow-simd")):
        return build_pillow_numpy(crop, name.endswith("+draft"), name.startswith("pillow-simd"))
    if name == "torchvision-cpu":
        return build_torchvision(crop), None
    if name == "torchcodec":
        return build_torchcodec(crop), None
    if name in ("nvimgcodec-cpu", "nvimgcodec-roi"):
        return build_nvimgcodec(crop, roi=name == "nvimgcodec-roi"), None
    if name == "dali-cpu":
        return build_dali(crop, batch, seed), None
    raise ValueError(f"unknown candidate {name!r}")


# ---------------------------------------------------------------- the child: one candidate


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def library_versions() -> dict:
    """Versions of what this interpreter has, of the libraries the candidates use."""
    found: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable}
    for dist in ("Pillow", "pillow-simd", "numpy", "torch", "torchvision", "torchcodec",
                 "nvidia-nvimgcodec-cu13", "nvidia-nvimgcodec-cu12", "nvidia-dali-cuda130",
                 "nvidia-dali-cuda120", "scikit-image"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        from PIL import features

        found["PIL libjpeg-turbo"] = features.version("libjpeg_turbo")
    except ImportError:
        pass
    return found


def _version_of(library: str, versions: dict) -> str | None:
    for dist, version in versions.items():
        if dist.lower().startswith(library.lower()):
            return version
    return None


def pin(cpu: int) -> None:
    """This process, and every thread it starts from now on, on CPU `cpu` only."""
    os.sched_setaffinity(0, {cpu})


def time_candidate(spec: dict) -> dict:
    """The child's work: build the candidate, warm up, time the windows."""
    name = spec["candidate"]
    library = CANDIDATES[name]
    if library == "Pillow" and _has_distribution("pillow-simd"):  # PIL is the fork here
        library = "pillow-simd"
    result: dict[str, Any] = {"candidate": name, "library": library,
                              "versions": library_versions(), "cpu": spec["cpu"],
                              "affinity": sorted(os.sched_getaffinity(0))}
    result["version"] = _version_of(library, result["versions"])
    random.seed(spec["seed"])
    try:
        import numpy as np

        np.random.seed(spec["seed"])
        import torch

        torch.manual_seed(spec["seed"])
    except ImportError:
        pass  # the numpy/PIL candidates run without torch
    try:
        candidate, reductions = build(name, spec["crop"], spec["batch"], spec["seed"],
                                      spec["use_v2"])
    except ImportError as exc:
        return {**result, "status": "not installed", "error": _one_line(exc)}
    except Exception as exc:  # a candidate that fails is a row, not a crash
        return {**result, "status": "error", "error": _one_line(exc)}
    result["note"] = candidate.note
    try:
        data = [Path(p).read_bytes() for p in spec["paths"]]
        inputs = candidate.prepare(data)
        result.update(timed(candidate, inputs, spec))
    except Exception as exc:
        return {**result, "status": "error", "error": _one_line(exc)}
    if reductions:
        total = sum(reductions.values())
        result["draft_reduction_shares"] = {f"1/{s}": round(n / total, 3)
                                            for s, n in sorted(reductions.items())}
    return {**result, "status": "ok"}


def timed(candidate: Candidate, inputs: list, spec: dict) -> dict:
    """img/s of each window over batches of spec['batch'] inputs, cycling through them."""
    size = spec["batch"]
    batches = [inputs[i:i + size] for i in range(0, len(inputs) - size + 1, size)]
    if not batches:
        raise ValueError(f"fewer images ({len(inputs)}) than one batch ({size})")
    position = 0

    def one() -> int:
        nonlocal position
        out = candidate.run_batch(batches[position % len(batches)])
        position += 1
        if tuple(out.shape) != (size, 3, spec["crop"], spec["crop"]):
            raise RuntimeError(f"output shape {tuple(out.shape)}")
        return size

    for _ in range(spec["warmup"]):
        one()
    rates = []
    for _ in range(spec["windows"]):
        start, images = time.perf_counter(), 0
        while True:
            images += one()
            elapsed = time.perf_counter() - start
            if (images >= spec["images_per_window"] if spec["images_per_window"]
                    else elapsed >= spec["seconds_per_window"]):
                break
        rates.append(images / elapsed)
    return {"images_per_second_per_core": statistics.median(rates),
            "window_images_per_second": [round(r, 1) for r in rates],
            "min": min(rates), "max": max(rates), "batch": size,
            "distinct_images": len(batches) * size,
            "output": f"float32 ({size}, 3, {spec['crop']}, {spec['crop']})"}


def child_main() -> None:
    """--child: the spec on stdin, the result as the last line of stdout."""
    spec = json.loads(sys.stdin.read())
    pin(spec["cpu"])  # before any library starts a thread
    print(json.dumps(time_candidate(spec)), flush=True)


# ---------------------------------------------------------------- the parent


@dataclass
class Settings:
    crop: int = 224
    batch: int = 64
    warmup: int = 2
    windows: int = 5
    seconds_per_window: float = 2.0
    images_per_window: int | None = None
    cpu: int = 0
    seed: int = 0
    use_v2: bool = False
    timeout: float = 900.0
    python_for: dict[str, str] = field(default_factory=dict)


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({variable: "1" for variable in THREAD_VARIABLES})
    env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU benchmark: no library may reach for a GPU
    # The child runs this file by path, so the trainer must come from the interpreter or
    # PYTHONPATH; add the checkout's so the pillow row finds it either way.
    trainer = str(Path(__file__).resolve().parents[1] / "trainer")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (trainer, env.get("PYTHONPATH")) if p)
    return env


def run_candidate(name: str, paths: Sequence[Path], s: Settings) -> dict:
    python = s.python_for.get(name, sys.executable)
    spec = {"candidate": name, "paths": [str(p) for p in paths], **asdict(s)}
    spec.pop("python_for")
    command = [python, str(Path(__file__).resolve()), "--child"]
    try:
        done = subprocess.run(command, input=json.dumps(spec), capture_output=True, text=True,
                              env=child_environment(), timeout=s.timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"candidate": name, "library": CANDIDATES[name], "python": python,
                "status": "error", "error": _one_line(exc)}
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        result = {"candidate": name, "library": CANDIDATES[name], "status": "error",
                  "error": f"child failed (rc {done.returncode}): {tail}"}
    result["python"] = python
    return result


def project(result: dict, node_cores: int, gpus: int, gpu_rate: float) -> None:
    """Add the node projection: node_cores x img/s per core against gpus x gpu_rate."""
    rate = result.get("images_per_second_per_core")
    if not rate:
        return
    result["node_images_per_second"] = node_cores * rate
    result["share_of_gpu_demand"] = node_cores * rate / (gpus * gpu_rate)
    result["cores_per_gpu"] = gpu_rate / rate


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def format_table(results: Sequence[dict], node_cores: int, gpus: int, gpu_rate: float,
                 crop: int) -> str:
    demand = gpus * gpu_rate
    lines = [f"| candidate | library version | img/s per core | min-max | {node_cores} cores "
             f"(img/s; need {demand:,.0f}) | cores per GPU for {gpu_rate:,.0f} img/s | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        version = f"{r['library']} {r.get('version') or '-'}"
        if r.get("status") != "ok":
            lines.append(f"| {r['candidate']} | {version} | - | - | - | - | "
                         f"{r.get('status')}: {r.get('error', '')} |")
            continue
        note = r.get("note", "")
        shares = r.get("draft_reduction_shares")
        if shares == {"1/1": 1.0}:
            note += f"; never reduced: no crop was {2 * crop}+ px on both sides"
        elif shares:
            note += "; " + ", ".join(f"{k}: {v:.0%}" for k, v in shares.items())
        lines.append(
            f"| {r['candidate']} | {version} | {r['images_per_second_per_core']:,.0f} | "
            f"{r['min']:,.0f}-{r['max']:,.0f} | {r['node_images_per_second']:,.0f} "
            f"({r['share_of_gpu_demand']:.0%}) | {r['cores_per_gpu']:.1f} | {note} |")
    return "\n".join(lines)


def machine() -> dict:
    from throughput import cpu_name  # the parent has torch; see write_jpeg

    return {"cpu": cpu_name(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "load_average": os.getloadavg()}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _python_for(text: str) -> tuple[list[str], str]:
    names, sep, python = text.partition("=")
    chosen = [n for n in names.split(",") if n]
    if not sep or not python or not chosen or not set(chosen) <= set(CANDIDATES):
        raise argparse.ArgumentTypeError(
            f"expected NAME[,NAME...]=PYTHON with names from {', '.join(CANDIDATES)}")
    return chosen, python


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/decode.py",
        description="Training images decoded and augmented per second on one CPU core.")
    p.add_argument("--images", type=_positive, default=2000,
                   help="JPEGs in the set, all read into memory (2000)")
    p.add_argument("--jpeg-dir", type=Path, default=Path(DEFAULT_JPEG_DIR),
                   help=f"where the set is, or is written (default {DEFAULT_JPEG_DIR})")
    p.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=None,
                   metavar="NAME", help=f"default: all of {', '.join(CANDIDATES)}")
    p.add_argument("--crop", type=_positive, default=224, help="training crop size (224)")
    p.add_argument("--batch", type=_positive, default=64, help="images per batch (64)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (2)")
    p.add_argument("--windows", type=_positive, default=5,
                   help="timed windows per candidate; the median is reported (5)")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--seconds-per-window", type=float, default=2.0,
                        help="each window runs whole batches for at least this long (2.0)")
    window.add_argument("--images-per-window", type=_positive, default=None,
                        help="or for at least this many images")
    p.add_argument("--cpu", type=int, default=None,
                   help="the CPU every candidate is pinned to (default: the last usable one)")
    p.add_argument("--python-for", type=_python_for, action="append", default=[],
                   metavar="NAME[,NAME]=PYTHON",
                   help="run these candidates with another interpreter (repeatable)")
    p.add_argument("--use-v2", action="store_true",
                   help="pillow rows with torchvision.transforms.v2 (the trainer's --use-v2)")
    p.add_argument("--node-cores", type=_positive, default=16, help="cores of a node (16)")
    p.add_argument("--gpus", type=_positive, default=8, help="GPUs of a node (8)")
    p.add_argument("--gpu-rate", type=float, default=4800.0,
                   help="training img/s one GPU consumes (4800)")
    p.add_argument("--workers", type=_positive, default=len(os.sched_getaffinity(0)),
                   help="processes writing missing JPEGs (default: usable cores)")
    p.add_argument("--seed", type=int, default=0, help="JPEG set and augmentation seed (0)")
    p.add_argument("--quality", type=_positive, default=JPEG_QUALITY,
                   help=f"JPEG quality of the set ({JPEG_QUALITY})")
    p.add_argument("--grain", type=float, default=GRAIN,
                   help=f"sensor-like noise of the set, sigma in 0-255 steps ({GRAIN:g})")
    p.add_argument("--no-sharpen", dest="sharpen", action="store_false",
                   help="no unsharp mask on the enlarged photo crops")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds before a candidate's child is given up (900)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.child:
        child_main()
        return None
    usable = sorted(os.sched_getaffinity(0))
    cpu = usable[-1] if args.cpu is None else args.cpu
    if cpu not in usable:
        build_parser().error(f"--cpu {cpu}: usable CPUs are {usable}")
    python_for = {name: python for names, python in args.python_for for name in names}
    s = Settings(crop=args.crop, batch=args.batch, warmup=max(0, args.warmup),
                 windows=args.windows, seconds_per_window=args.seconds_per_window,
                 images_per_window=args.images_per_window, cpu=cpu, seed=args.seed,
                 use_v2=args.use_v2, timeout=args.timeout, python_for=python_for)
    started = time.perf_counter()
    recipe = JpegRecipe(seed=args.seed, quality=args.quality, grain=args.grain,
                        sharpen=args.sharpen)
    try:
        paths = make_jpeg_set(args.jpeg_dir, args.images, recipe, workers=args.workers)
    except ImportError as exc:
        sys.exit(f"making the JPEG set needs scikit-image ({exc}); see this file's docstring")
    except RuntimeError as exc:
        sys.exit(str(exc))
    jpegs = describe_jpegs(args.jpeg_dir, paths, recipe)
    print(f"JPEG set {args.jpeg_dir}: {jpegs['count']} images, mean {jpegs['mean_kilobytes']} "
          f"KB and {jpegs['bytes_per_pixel']} byte/px (ImageNet ~{IMAGENET_MEAN_KILOBYTES} KB, "
          f"~{IMAGENET_BYTES_PER_PIXEL}), {jpegs['mean_megapixels']} MP mean, ready in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores; pinned to CPU {cpu}; batch {s.batch}, crop "
          f"{s.crop}, {s.warmup} warm-up batches + {s.windows} windows of "
          + (f"{s.images_per_window} images" if s.images_per_window
             else f"{s.seconds_per_window:g}s") + "\n", flush=True)
    results = []
    for name in args.candidates or list(CANDIDATES):
        result = run_candidate(name, paths, s)
        project(result, args.node_cores, args.gpus, args.gpu_rate)
        rate = result.get("images_per_second_per_core")
        print(f"{name:20s} " + (f"{rate:8.1f} img/s per core  {result['window_images_per_second']}"
                                if rate else f"{result['status']}: {result.get('error')}"),
              flush=True)
        results.append(result)
    print("\n" + format_table(results, args.node_cores, args.gpus, args.gpu_rate, s.crop))
    report = {
        "benchmark": "decode", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "argv": argv, "machine": info, "settings": {**asdict(s)},
        "node": {"cores": args.node_cores, "gpus": args.gpus,
                 "gpu_images_per_second": args.gpu_rate,
                 "images_per_second_needed": args.gpus * args.gpu_rate},
        "versions": {r["python"]: r["versions"] for r in results if "versions" in r},
        "jpegs": jpegs, "candidates": results,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
