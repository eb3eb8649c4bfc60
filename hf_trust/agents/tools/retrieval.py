"""Retrieval tools: plain typed functions, usable with ``apply_chat_template(tools=...)`` and TRL."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hf_trust.errors import HFTrustKeyError


def make_profile_tool(profiles: Mapping[str, Mapping[str, Any]]) -> Callable[[str], str]:
    """A ``retrieve_user_profile(user_id)`` tool over an in-memory profile store.

    The returned function has type hints and a Google-style docstring, so
    ``transformers.utils.get_json_schema`` turns it into a tool schema.
    """

    def retrieve_user_profile(user_id: str) -> str:
        """Retrieve the stored profile of one user.

        Args:
            user_id: The identifier of the user whose profile is needed.
        """
        if user_id not in profiles:
            raise HFTrustKeyError(f"Unknown user_id {user_id!r}; known ids: {', '.join(sorted(profiles)[:5])}...")
        return json.dumps({k: v for k, v in profiles[user_id].items() if k != "user_id"})

    return retrieve_user_profile
