"""LoRASculpt (Liang et al., CVPR 2025): sparse LoRA updates + Conflict Mitigation Regularizer, as a PEFT tuner."""

from .._registry import register_tuner
from .config import LoRASculptConfig
from .model import LoRASculptModel

register_tuner("lorasculpt", LoRASculptConfig, LoRASculptModel, prefix="lora_")

from .callback import LoRASculptCallback  # noqa: E402
from .trainer import LoRASculptTrainer  # noqa: E402

__all__ = ["LoRASculptCallback", "LoRASculptConfig", "LoRASculptModel", "LoRASculptTrainer"]
