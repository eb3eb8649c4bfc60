"""Federated prompt learning for CLIP (LPT, VPT and both) on the federated core.

Follows "An Empirical Study of Federated Prompt Learning for Vision Language Model" (Wang et al.,
IJCAI 2025): only prompt tensors on a frozen ``transformers.CLIPModel`` are trained and aggregated.
"""

from .client import PromptClientTrainer
from .config import FPLConfig, FPLConfigError, PromptConfig
from .diagnostics import round_diagnostics, save_diagnostics, summarize, token_cosine
from .io import load_prompts, save_prompts
from .nullspace import ProjectedOptimizer, null_space_projector
from .prompts import CLIPPromptModel
from .trainer import FederatedPromptTrainer

__all__ = [
    "CLIPPromptModel",
    "FPLConfig",
    "FPLConfigError",
    "FederatedPromptTrainer",
    "ProjectedOptimizer",
    "PromptClientTrainer",
    "PromptConfig",
    "load_prompts",
    "null_space_projector",
    "round_diagnostics",
    "save_diagnostics",
    "save_prompts",
    "summarize",
    "token_cosine",
]
