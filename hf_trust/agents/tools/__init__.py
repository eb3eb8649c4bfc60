"""Tools the privacy agent intercepts, and the ledger it writes."""

from .ledger import DataFlowLedger, Delivery, LedgerEntry
from .retrieval import make_profile_tool

__all__ = ["DataFlowLedger", "Delivery", "LedgerEntry", "make_profile_tool"]
