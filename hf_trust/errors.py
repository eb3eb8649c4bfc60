"""The one exception family of hf-trust.

A leaf module: it imports nothing from the package, so every layer (library, harness, tests) may
import it without side effects. Every error hf-trust raises for a problem the user can fix derives
from :class:`HFTrustError`; the ones about bad arguments also derive from :class:`ValueError`, so
existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class HFTrustError(Exception):
    """Base class of the errors hf-trust raises for problems the user can fix; the message names the fix."""


class HFTrustConfigError(HFTrustError, ValueError):
    """An argument or config field has a value that cannot work (the message names the field and the fix)."""


class HFTrustTypeError(HFTrustError, TypeError):
    """An argument has the wrong type (the message names the argument, the type given and the type expected)."""


class HFTrustStateError(HFTrustError, RuntimeError):
    """An operation was called in a state where it cannot run (e.g. scoring before fitting, a tuner registered
    twice with other settings); the message names the missing step."""


class HFTrustKeyError(HFTrustError, KeyError):
    """A name looked up in a registry or mapping of hf-trust does not exist (the message lists the known names)."""

    def __str__(self) -> str:  # KeyError's str() wraps the message in quotes; show it as written
        return str(self.args[0]) if self.args else ""


class HFTrustFileNotFoundError(HFTrustError, FileNotFoundError):
    """A file or folder hf-trust was pointed at does not exist or lacks a file it needs (the message names it)."""


class HFTrustDataError(HFTrustError, ValueError):
    """Input data is malformed (wrong labels, non-finite values, missing columns, wrong widths)."""


class HFTrustCacheError(HFTrustError):
    """A cache or saved artefact is unreadable, truncated or belongs to other settings."""


class AssetMissingError(HFTrustError):
    """An offline asset (model or data package) is not installed; the message names the install step."""


class AssetCacheError(HFTrustError):
    """The asset cache folder cannot be created or written; the message names the folder and the fix."""


class DemoError(HFTrustError):
    """A problem with a demo run the user can fix (bad method name, unwritable or foreign output folder)."""


class PartitionError(HFTrustConfigError):
    """A partition request that cannot be satisfied (bad parameters or data)."""


class ClientTimeout(HFTrustError):
    """Raised inside a federated client's training when it runs past ``FederatedConfig.client_timeout``."""


class FederationError(HFTrustError, RuntimeError):
    """A federated run produced something that cannot be used (e.g. a server step with NaN/inf), or was given
    inputs that cannot be federated; the message names the culprit (strategy, client or checkpoint) and the fix."""


class FederationTimeout(FederationError, TimeoutError):
    """A bounded wait of a federation (handshake, nodes to connect, replies) passed its limit; the message names
    the nodes or clients that did not answer and the setting that bounds the wait."""


class FPLConfigError(HFTrustConfigError):
    """A federated prompt-learning option is invalid."""


class KineticsError(HFTrustConfigError):
    """Bad input to CoT-Kinetics (the message names the problem and the fix)."""


class MissingExtraError(HFTrustError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install "hf-trust[extra]"`` step."""


def require_extra(module: str, *, extra: str, feature: str, fix: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtraError` naming what failed and the fix.

    The message names the module that actually failed to import (``exc.name``): an installed package whose own
    dependency is missing (``flwr_datasets`` without ``seaborn``) needs that dependency, not a reinstall of
    the package itself. ``fix`` replaces the default ``pip install "hf-trust[extra]"`` advice.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        if missing != module and not missing.startswith(module + "."):
            how = fix or f"pip install {missing.split('.')[0]}"
            raise MissingExtraError(
                f"{feature} needs {module!r}, which is installed but failed to import because its dependency "
                f"{missing!r} is missing ({exc}); install it with: {how}"
            ) from exc
        how = fix or f'pip install "hf-trust[{extra}]"'
        raise MissingExtraError(
            f"{feature} needs the optional module {missing!r} (the [{extra}] extra), which is not installed; "
            f"install it with: {how}"
        ) from exc


__all__ = [
    "AssetCacheError",
    "AssetMissingError",
    "ClientTimeout",
    "DemoError",
    "FPLConfigError",
    "FederationError",
    "FederationTimeout",
    "HFTrustCacheError",
    "HFTrustConfigError",
    "HFTrustDataError",
    "HFTrustError",
    "HFTrustFileNotFoundError",
    "HFTrustKeyError",
    "HFTrustStateError",
    "HFTrustTypeError",
    "KineticsError",
    "MissingExtraError",
    "PartitionError",
    "require_extra",
]
