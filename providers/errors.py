"""The providers' own exceptions. Upstream trouble never raises (it is a ``CallRecord``'s status);
these say that an endpoint cannot be served as configured. The gateway maps them, at its edge,
to its own ``ConfigError``.

ProviderError
├── EndpointConfigError   an endpoint's settings cannot be served (key unset, function missing)
└── RecordingError        a recording cannot be read, or does not fit what is asked of it
"""

from __future__ import annotations


class ProviderError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EndpointConfigError(ProviderError):
    pass


class RecordingError(ProviderError):
    pass
