"""The gateway's exceptions; each maps to one HTTP status, once, in ``gateway.api``.

CoEError
├── ConfigError               the config file is wrong; the gateway does not start
├── BadRequest          400   malformed body, bad header value, unsupported parameter
├── Unauthorized        401   no key, or a key no tenant holds
├── Forbidden           403   a key asking for what it may not see
├── NotFound            404   unknown route
├── PayloadTooLarge     413   body over server.max_body_bytes
├── QuotaExceeded       429   the tenant's monthly budget cannot hold this request's worst case
├── LedgerUnavailable   503   the ledger cannot commit (or reserve) now; sent with Retry-After
├── TooManyRequests     429   the tenant is past max_concurrent_requests_per_tenant in flight
│                             or max_requests_per_second_per_tenant
├── ReloadRefused       409   a config reload was refused; the running config keeps serving
└── CascadeFailed             the cascade ran (and paid) but decided nothing; carries the outcome
    ├── UpstreamFailed  502   every endpoint of the last tier reached failed
    └── DeadlineExceeded 504  the request's deadline passed before a decision
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.outcome import RequestOutcome


class CoEError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ConfigError(CoEError):
    pass


class BadRequest(CoEError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(CoEError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(CoEError):
    status_code = 403
    error_type = "permission_error"


class NotFound(CoEError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(CoEError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class QuotaExceeded(CoEError):
    status_code = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"


class TooManyRequests(CoEError):
    """Answered with a ``Retry-After`` header of ``retry_after_s``."""

    status_code = 429
    error_type = "requests"  # as OpenAI types its request-rate 429s
    code = "rate_limit_exceeded"
    retry_after_s = 1


class ReloadRefused(CoEError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "reload_refused"


class LedgerUnavailable(CoEError):
    """The ledger could not be opened, or cannot commit a request's rows or its budget reservation.

    A request is never answered unrecorded: it gets this 503 instead, with a ``Retry-After``
    header of ``retry_after_s`` (the writer retries the database about twice a second)."""

    status_code = 503
    error_type = "server_error"
    code = "ledger_unavailable"
    retry_after_s = 1


class CascadeFailed(CoEError):
    def __init__(self, message: str, *, outcome: RequestOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class UpstreamFailed(CascadeFailed):
    status_code = 502
    error_type = "upstream_error"
    code = "upstream_failed"


class DeadlineExceeded(CascadeFailed):
    status_code = 504
    error_type = "timeout_error"
    code = "deadline_exceeded"
