"""Exceptions shared across hf-trust."""


class HFTrustError(RuntimeError):
    """Base class of the errors hf-trust raises for problems the user can fix."""


class AssetMissingError(HFTrustError):
    """An offline asset (model or data package) is not installed; the message names the install step."""


class AssetCacheError(HFTrustError):
    """The asset cache folder cannot be created or written; the message names the folder and the fix."""
