"""The single place where hf-trust extends PEFT with new tuner types.

PEFT keeps its tuner types in the closed ``PeftType`` enum and refuses to register a method whose
name is not a member.  :func:`register_tuner` adds the member (idempotently) and then calls
``peft.utils.register_peft_method``.  Every tuner of this project registers through it.

The enum *value* written into ``adapter_config.json`` is the upper-case name followed by a hint
(``"THANORA (import hf_trust to load)"``).  PEFT raises ``KeyError(<value>)`` when it meets an
unregistered type, so a user who forgot ``import hf_trust`` reads the missing import in the error
itself, without any code of ours having been imported.

:func:`register_all` registers every tuner this installation ships (``TUNERS``).  ``import hf_trust`` does not
call it: it installs a post-import hook that calls it right after ``peft`` finishes importing (or at once when
``peft`` was imported before ``hf_trust``), so that ``import hf_trust`` alone stays free of PEFT and torch.
"""

from __future__ import annotations

import enum
import importlib
from typing import Optional

from peft.utils import PeftType, register_peft_method

from hf_trust.errors import HFTrustConfigError, HFTrustStateError

IMPORT_HINT = "(import hf_trust first)"

#: Tuner sub-packages of ``hf_trust.peft_tuners``, in registration order (the one list to extend).
TUNERS: tuple[str, ...] = ("thanora", "lorasculpt")
_PACKAGE = __name__.rpartition(".")[0]


def peft_type_value(name: str) -> str:
    """The string stored as ``peft_type`` in saved adapter configs for tuner ``name``."""
    return f"{name} {IMPORT_HINT}".upper()


def _add_enum_member(enum_cls: type[enum.Enum], alias: str, value: str) -> enum.Enum:
    """Add ``value`` as a member of a str-mixin enum, reachable as ``enum_cls.<alias>`` too.

    The member's name equals its value: enum members hash by name and PEFT looks its mappings up
    with the raw string read from JSON, so both must hash alike.
    """
    existing = enum_cls._member_map_.get(value)
    if existing is not None:
        return existing
    member = str.__new__(enum_cls, value)
    member._name_ = value
    member._value_ = value
    member.__objclass__ = enum_cls
    member._sort_order_ = len(enum_cls._member_names_)
    enum_cls._member_map_[value] = member
    enum_cls._value2member_map_[value] = member
    enum_cls._member_names_.append(value)
    type.__setattr__(enum_cls, value, member)
    if alias not in enum_cls._member_map_:
        type.__setattr__(enum_cls, alias, member)
    return member


def register_tuner(
    name: str,
    config_cls: type,
    model_cls: type,
    prefix: Optional[str] = None,
    is_mixed_compatible: bool = False,
) -> PeftType:
    """Add ``name`` to ``PeftType`` and register its config and model classes with PEFT.

    Calling it again does nothing, so importing ``hf_trust`` twice (or reloading a tuner module)
    is safe.  After the call ``PeftType.<NAME>`` is the tuner's member.

    Args:
        name: lower-case tuner name, e.g. ``"thanora"``.
        config_cls: the tuner's ``PeftConfig`` subclass; its ``__post_init__`` sets
            ``self.peft_type = PeftType.<NAME>``.
        model_cls: the tuner's ``BaseTuner`` subclass.
        prefix: parameter-name prefix of the tuner's adapter weights (default ``name + "_"``).
        is_mixed_compatible: forwarded to ``register_peft_method``.

    Returns:
        The ``PeftType`` member of the tuner.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    if not name or not name.isidentifier() or not name.islower() or name.endswith("_"):
        raise HFTrustConfigError(
            f"register_tuner: name must be a lower-case identifier without a trailing '_', got {name!r}."
        )
    prefix = prefix or name + "_"
    value = peft_type_value(name)
    member = _add_enum_member(PeftType, name.upper(), value)
    if member in PEFT_TYPE_TO_CONFIG_MAPPING:
        known_cfg = PEFT_TYPE_TO_CONFIG_MAPPING[member]
        if known_cfg is not config_cls and known_cfg.__qualname__ != config_cls.__qualname__:
            raise HFTrustStateError(
                f"PEFT already has a different tuner registered as {name!r} ({known_cfg.__module__}."
                f"{known_cfg.__qualname__}); register {config_cls.__qualname__} under another name."
            )
        # Same tuner (possibly a reloaded module): keep the newest class objects.
        PEFT_TYPE_TO_CONFIG_MAPPING[member] = config_cls
        PEFT_TYPE_TO_TUNER_MAPPING[member] = model_cls
        return member
    # register_peft_method derives the member from name.upper(), hence the lower-cased value.
    register_peft_method(
        name=value.lower(),
        config_cls=config_cls,
        model_cls=model_cls,
        prefix=prefix,
        is_mixed_compatible=is_mixed_compatible,
    )
    return member


def register_all() -> list[str]:
    """Import (and so register) every tuner sub-package present; return the names registered.

    Idempotent: a tuner already imported is registered already (its ``__init__`` calls :func:`register_tuner`).
    """
    done = []
    for name in TUNERS:
        module = f"{_PACKAGE}.{name}"
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
