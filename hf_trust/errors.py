"""The one exception family of hf-trust.

A leaf module: it imports nothing from the package, so every layer (library, harness, tests) may
import it without side effects. Every error hf-trust raises for a problem the user can fix derives
from :class:`HFTrustError`; the ones about bad arguments also derive from :class:`ValueError`, so
existing ``except ValueError`` code keeps working.
"""


class HFTrustError(Exception):
    """Base class of the errors hf-trust raises for problems the user can fix; the message names the fix."""


class HFTrustConfigError(HFTrustError, ValueError):
    """An argument or config field has a value that cannot work (the message names the field and the fix)."""


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


class FPLConfigError(HFTrustConfigError):
    """A federated prompt-learning option is invalid."""


class KineticsError(HFTrustConfigError):
    """Bad input to CoT-Kinetics (the message names the problem and the fix)."""


class MissingExtraError(HFTrustError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install "hf-trust[extra]"`` step."""


__all__ = [
    "AssetCacheError",
    "AssetMissingError",
    "ClientTimeout",
    "DemoError",
    "FPLConfigError",
    "HFTrustCacheError",
    "HFTrustConfigError",
    "HFTrustDataError",
    "HFTrustError",
    "KineticsError",
    "MissingExtraError",
    "PartitionError",
]
