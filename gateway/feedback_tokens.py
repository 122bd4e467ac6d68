"""Feedback tokens: proof that a feedback comes from whoever got the decision.

Each decision's response carries ``feedback_token`` = HMAC-SHA256(secret, decision id)
(hex), in ``parameters``, the ``x-arbiter-feedback-token`` header and gRPC trailing
metadata. A deployment with ``feedback.require_decision_token`` refuses (403) any
feedback item whose ``feedback_token`` does not match its decision, so a caller who
can send feedback but never got the decision cannot forge rewards for it. The secret
comes from the config or ``ARBITER_FEEDBACK_SECRET`` and is shared by every replica, so
a token stays valid across restarts and replicas; nothing per decision is stored.

Source: RFC 2104 (HMAC); comparison in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from protos.errors import PermissionDeniedError

__all__ = ["FeedbackTokens", "TOKEN_FIELD", "TOKEN_HEADER"]

TOKEN_FIELD = "feedback_token"
"""Response parameter and feedback item field holding the token."""
TOKEN_HEADER = "x-arbiter-feedback-token"
"""Response header (and gRPC trailing metadata key) holding the token."""


class FeedbackTokens:
    """Issues and checks feedback tokens with one secret.

    Args:
        secret: the HMAC key (at least 16 characters).
    """

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def issue(self, decision_id: str) -> str:
        """The token of ``decision_id`` (64 hex digits)."""
        return hmac.new(self._key, decision_id.encode(), hashlib.sha256).hexdigest()

    def valid(self, decision_id: str, token: Any) -> bool:
        """Whether ``token`` is the token of ``decision_id``."""
        return isinstance(token, str) and hmac.compare_digest(self.issue(decision_id), token)

    def check(self, item: Any) -> None:
        """Refuse a feedback item without its decision's token (items that are not
        objects with a string ``decision_id`` are left to the feedback parser's 400).

        Raises:
            PermissionDeniedError: the token is missing or does not match.
        """
        if not isinstance(item, dict) or not isinstance(item.get("decision_id"), str):
            return
        if not self.valid(item["decision_id"], item.get(TOKEN_FIELD)):
            raise PermissionDeniedError(
                f"feedback on decision {item['decision_id']!r} needs its {TOKEN_FIELD!r} "
                "(returned with the decision)")
