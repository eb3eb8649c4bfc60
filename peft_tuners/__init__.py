"""PEFT tuner types added by hf-trust, one sub-package per tuner (peft-style config/layer/model).

Importing a tuner sub-package registers it with PEFT through :mod:`hf_trust.peft_tuners._registry`.
:func:`register_all` imports every tuner that this installation ships.
"""

from __future__ import annotations

import importlib

from ._registry import register_tuner

#: Tuner sub-packages, in registration order.
TUNERS: tuple[str, ...] = ("thanora", "lorasculpt")


def register_all() -> list[str]:
    """Import (and so register) every tuner sub-package present; return the names registered."""
    done = []
    for name in TUNERS:
        module = f"{__name__}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # Only a tuner that is not part of this installation is skipped; a missing dependency
            # inside a tuner must surface.
            if exc.name != module:
                raise
            continue
        done.append(name)
    return done


__all__ = ["TUNERS", "register_all", "register_tuner"]
