"""Dataset filters.  :class:`BYEFilter` removes backdoor-poisoned image-text samples (BYE, NeurIPS 2025)."""

from .bye import BYEFilter, bye_select, image_attention_entropy
from .capture import LastTokenAttention, decoder_attention_modules, last_prompt_index
from .config import DEFAULT_MAX_REMOVAL_FRACTION, DEFAULT_MIN_ROWS, BYESelectConfig
from .defence import DefenceResult, answer_loss, bye_defence, lora_finetune
from .gmm import GMM1D, fit_gmm_1d, gaussian_kl
from .report import BYEReport
from .select import (
    bimodal_separation_index,
    layer_auroc,
    robust_select,
)

__all__ = [
    "BYEFilter",
    "BYEReport",
    "BYESelectConfig",
    "bye_select",
    "image_attention_entropy",
    "LastTokenAttention",
    "decoder_attention_modules",
    "last_prompt_index",
    "bye_defence",
    "DefenceResult",
    "lora_finetune",
    "answer_loss",
    "GMM1D",
    "fit_gmm_1d",
    "gaussian_kl",
    "bimodal_separation_index",
    "robust_select",
    "layer_auroc",
    "DEFAULT_MAX_REMOVAL_FRACTION",
    "DEFAULT_MIN_ROWS",
]
