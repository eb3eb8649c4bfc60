"""ThanoRA (Liang et al., arXiv 2505.18640): task heterogeneity-aware multi-task LoRA, as a PEFT tuner.

One ordinary LoRA whose rank budget holds, per layer, task-specific blocks sized by each task's normalised
singular-value entropy (initialised from each task's activation-covariance-informed truncated SVD) and one
shared cooperative block, trained on the mixed data with a pairwise orthogonality regulariser between the
task blocks.  It merges like plain LoRA.
"""

from .._registry import register_tuner
from .config import ThanoRAConfig
from .model import ThanoRAModel

register_tuner("thanora", ThanoRAConfig, ThanoRAModel, prefix="lora_")

from .layer import softmax_allocation  # noqa: E402
from .preprocess import preprocess_thanora  # noqa: E402
from .report import format_allocation, plot_allocation, plot_allocation_heatmap  # noqa: E402


def __getattr__(name: str):
    # The Trainer subclass pulls in transformers.Trainer (and datasets); loading it on first use keeps the
    # registration that `import hf_trust` performs as light as importing PEFT.
    if name == "ThanoRATrainer":
        from .trainer import ThanoRATrainer

        return ThanoRATrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ThanoRAConfig",
    "ThanoRAModel",
    "ThanoRATrainer",
    "format_allocation",
    "plot_allocation",
    "plot_allocation_heatmap",
    "preprocess_thanora",
    "softmax_allocation",
]
