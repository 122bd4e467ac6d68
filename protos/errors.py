"""The one error vocabulary of Arbiter.

Every error a request can meet is one of these classes; each declares one HTTP status
and one gRPC status name, and the transports (``protos/server/rest.py`` and
``protos/server/grpc.py``) each map them with a single table lookup. This module
imports no web or RPC framework.

Exception tree::

    ArbiterError                      500  INTERNAL
     +-- InvalidRequestError          400  INVALID_ARGUMENT
     +-- UnauthenticatedError         401  UNAUTHENTICATED
     +-- PermissionDeniedError        403  PERMISSION_DENIED
     +-- NotFoundError                404  NOT_FOUND
     |    +-- ModelNotFoundError
     |    +-- DecisionNotFoundError
     +-- ModelNotReadyError           503  UNAVAILABLE   (Retry-After)
     |    +-- UpstreamUnavailableError
     +-- PayloadTooLargeError         413  RESOURCE_EXHAUSTED
     +-- OverloadedError              429  RESOURCE_EXHAUSTED
     +-- DeadlineError                504  DEADLINE_EXCEEDED
     +-- InferenceError               500  INTERNAL
     +-- UnsupportedError             501  UNIMPLEMENTED

Source of the table: ``docs/protocol.md``, "Our decisions".
"""

from __future__ import annotations

__all__ = [
    "ArbiterError",
    "InvalidRequestError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "NotFoundError",
    "ModelNotFoundError",
    "DecisionNotFoundError",
    "ModelNotReadyError",
    "UpstreamUnavailableError",
    "PayloadTooLargeError",
    "OverloadedError",
    "DeadlineError",
    "InferenceError",
    "UnsupportedError",
]


class ArbiterError(Exception):
    """Base of every error Arbiter reports to a client.

    Attributes:
        status: HTTP status code sent over REST.
        grpc_code: name of the ``grpc.StatusCode`` member sent over gRPC.
        retry_after_s: seconds for a ``Retry-After`` header, or ``None``.
    """

    status: int = 500
    grpc_code: str = "INTERNAL"
    retry_after_s: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ArbiterError):
    """Malformed body, schema violation, shape/data/datatype mismatch, bad parameter."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"


class UnauthenticatedError(ArbiterError):
    """No credentials, or credentials the server does not know (no or unknown bearer
    token)."""

    status = 401
    grpc_code = "UNAUTHENTICATED"


class PermissionDeniedError(ArbiterError):
    """Known credentials without the scope the request needs, or feedback without the
    decision's feedback token."""

    status = 403
    grpc_code = "PERMISSION_DENIED"


class NotFoundError(ArbiterError):
    """Something named by the request does not exist."""

    status = 404
    grpc_code = "NOT_FOUND"


class ModelNotFoundError(NotFoundError):
    """Unknown model, version or deployment."""


class DecisionNotFoundError(NotFoundError):
    """Unknown decision id."""


class ModelNotReadyError(ArbiterError):
    """Model loading or not ready, or the server is draining."""

    status = 503
    grpc_code = "UNAVAILABLE"
    retry_after_s = 1


class UpstreamUnavailableError(ModelNotReadyError):
    """A wrapper pod behind the gateway could not be reached."""


class PayloadTooLargeError(ArbiterError):
    """The request body is over the configured limit."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class OverloadedError(ArbiterError):
    """A bounded queue is full."""

    status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    retry_after_s = 1


class DeadlineError(ArbiterError):
    """An upstream or explainer deadline passed."""

    status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class InferenceError(ArbiterError):
    """The model raised, or produced an invalid output."""

    status = 500
    grpc_code = "INTERNAL"


class UnsupportedError(ArbiterError):
    """A protocol feature Arbiter does not implement (for example BF16)."""

    status = 501
    grpc_code = "UNIMPLEMENTED"
