"""LoRASculpt (Liang et al., CVPR 2025): sparse LoRA updates + Conflict Mitigation Regularizer, as a PEFT tuner."""

from .._registry import register_tuner
from .config import LoRASculptConfig
from .model import LoRASculptModel

register_tuner("lorasculpt", LoRASculptConfig, LoRASculptModel, prefix="lora_")


def __getattr__(name: str):
    # The callback and Trainer pull in transformers.Trainer (and datasets); loading them on first use keeps the
    # registration that `import hf_trust` performs as light as importing PEFT.
    if name == "LoRASculptCallback":
        from .callback import LoRASculptCallback

        return LoRASculptCallback
    if name == "LoRASculptTrainer":
        from .trainer import LoRASculptTrainer

        return LoRASculptTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LoRASculptCallback", "LoRASculptConfig", "LoRASculptModel", "LoRASculptTrainer"]
