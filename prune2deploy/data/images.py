"""`images:DIR`: one sub-folder per class (sorted names are class 0, 1, ...), decoded with Pillow.

Each image is converted to the example's channels (1: grayscale, 3: RGB), resized to --image-size
(default: the example input's height and width), scaled to [0, 1], then normalised with --image-mean and
--image-std when given (e.g. 0.485,0.456,0.406 and 0.229,0.224,0.225 for ImageNet models).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prune2deploy.config.values import parse_channels, parse_size
from prune2deploy.context import ExampleInputs
from prune2deploy.data.samples import Samples, stacked
from prune2deploy.errors import user_error

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def read_images(root: Path, example: ExampleInputs, options, what: str) -> Samples:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise user_error(f"{what} images:{root}: not a directory", "images:DIR with one sub-folder per class")
    ref = example.tensors()[0]
    if len(example.tensors()) != 1 or ref.dim() != 4 or not ref.dtype.is_floating_point:
        raise user_error(f"{what} images:{root} needs a model with one float NCHW input",
                         "e.g. --input-shape 1,3,224,224")
    channels = ref.shape[1]
    if channels not in (1, 3):
        raise user_error(f"{what} images:{root}: the model takes {channels} channels; images give 1 or 3")
    height, width = parse_size(options.image_size) if options.image_size else (ref.shape[2], ref.shape[3])
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise user_error(f"{what} images:{root} has no class sub-folders", "put each class's images in DIR/CLASS/")
    files = [(f, label) for label, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
             if f.suffix.lower() in EXTENSIONS]
    if not files:
        raise user_error(f"{what} images:{root} holds no images ({', '.join(sorted(EXTENSIONS))})")
    pixels = np.empty((len(files), channels, height, width), dtype=np.float32)
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as img:
                img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        except (UnidentifiedImageError, OSError) as exc:
            raise user_error(f"{what} images:{root}: cannot decode {f}: {exc}", "remove or fix the file") from exc
        array = np.asarray(img, dtype=np.float32) / 255.0
        pixels[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    pixels = _normalise(pixels, options, channels)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return stacked(ExampleInputs((torch.from_numpy(pixels).to(ref.dtype),), {}), labels)


def _normalise(pixels: np.ndarray, options, channels: int) -> np.ndarray:
    for name, apply in (("image_mean", np.subtract), ("image_std", np.divide)):
        text = getattr(options, name)
        if text:
            values = parse_channels(text, name.replace("_", "-"))
            if len(values) not in (1, channels):
                raise user_error(f"--{name.replace('_', '-')} has {len(values)} values; the images have "
                                 f"{channels} channels")
            pixels = apply(pixels, np.asarray(values, dtype=np.float32).reshape(-1, 1, 1))
    return pixels
