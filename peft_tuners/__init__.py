"""PEFT tuner types added by hf-trust, one sub-package per tuner (peft-style config/layer/model).

Importing a tuner sub-package registers it with PEFT through :mod:`hf_trust.peft_tuners._registry`;
:func:`register_all` imports every tuner that this installation ships.  ``import hf_trust`` runs it when
``peft`` is imported (see ``hf_trust/__init__.py``), not before: this package is where PEFT gets loaded.
"""

from __future__ import annotations

# First, before any module of this package starts: when ``hf_trust`` is imported but ``peft`` is not yet, this
# import runs hf-trust's post-import hook, which registers every tuner while no module of ours is half-imported.
import peft  # noqa: F401

from ._registry import TUNERS, register_all, register_tuner

__all__ = ["TUNERS", "register_all", "register_tuner"]
