"""What a language-model provider's failure looks like above the adapters.

SDK and HTTP exceptions never leave ``adapters/llm``: each adapter maps them, with
one table, onto these two types. Both are :class:`~cortex_core.errors.Unavailable`,
so an unhandled one still reaches a client as ``UNAVAILABLE`` with its reason::

    Unavailable
    └── ProviderError        one provider failed (raised by the provider adapters)
        └── ProviderFailure  the whole chain gave up (raised by FallbackProvider)

Reasons of :class:`ProviderError`:

==============================  =========  ==================================================
reason                          retryable  cause
==============================  =========  ==================================================
PROVIDER_UNREACHABLE            yes        connection refused, reset or cut mid-stream
PROVIDER_TIMEOUT                yes        connect or read timeout
PROVIDER_RATE_LIMITED           yes        HTTP 429
PROVIDER_UNAVAILABLE            yes        HTTP 5xx (529: overloaded), 408, 409
PROVIDER_STREAM_TRUNCATED       yes        the stream ended without a finish reason
PROVIDER_AUTH_FAILED            no         HTTP 401 or 403: a bad or missing key
PROVIDER_MODEL_NOT_FOUND        no         HTTP 404: a wrong model name or base URL
PROVIDER_BAD_REQUEST            no         HTTP 400, 413, 422: the request itself
PROVIDER_ERROR                  no         anything else the provider reported
==============================  =========  ==================================================

Reasons of :class:`ProviderFailure`: ``NO_PROVIDER_AVAILABLE`` (every provider failed, or
was skipped by its circuit breaker, before the first token: nothing was streamed)
and ``PROVIDER_FAILED`` (a provider failed after tokens were streamed; the
reply is partial).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from cortex_core.errors import Unavailable

_RETRYABLE = frozenset(
    {
        "PROVIDER_UNREACHABLE",
        "PROVIDER_TIMEOUT",
        "PROVIDER_RATE_LIMITED",
        "PROVIDER_UNAVAILABLE",
        "PROVIDER_STREAM_TRUNCATED",
    }
)
# Error types of in-stream error events (Anthropic's names; OpenAI's map to 500).
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "overloaded_error": 529,
}
# A bad request says nothing about the provider's health: it does not trip the breaker.
_NOT_THE_PROVIDERS_FAULT = frozenset({"PROVIDER_BAD_REQUEST"})


class ProviderError(Unavailable):
    """One provider's request failed.

    ``before_first_token`` is True when no text or tool call had been yielded yet, so the request
    can be retried or handed to another provider without the caller noticing.
    ``retry_after`` is the provider's own hint in seconds (``Retry-After``), if any.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        provider: str,
        before_first_token: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata={"provider": provider})
        self.provider = provider
        self.before_first_token = before_first_token
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.reason in _RETRYABLE

    @property
    def provider_fault(self) -> bool:
        """True when the failure says the provider is unhealthy (counts for its breaker)."""
        return self.reason not in _NOT_THE_PROVIDERS_FAULT


class ProviderFailure(ProviderError):
    """The fallback chain could not produce (or finish) a reply.

    ``errors`` holds every provider error met on the way, oldest first (empty when
    every provider was skipped by its open circuit breaker). When
    ``before_first_token`` is False, text was already streamed: the caller should
    keep it as a partial reply with finish reason ERROR and tell the client
    ``reason`` (``PROVIDER_FAILED``). For ``NO_PROVIDER_AVAILABLE``,
    ``retry_after`` is when a provider may be tried again (the soonest circuit to
    half-open, or a provider's own ``Retry-After``), or None when unknown.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        provider: str,
        before_first_token: bool,
        errors: tuple[ProviderError, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            reason,
            message,
            provider=provider,
            before_first_token=before_first_token,
            retry_after=retry_after,
        )
        self.errors = errors


def from_status(
    status: int,
    *,
    provider: str,
    before_first_token: bool,
    headers: Mapping[str, str] | None = None,
    error_type: str = "",
) -> ProviderError:
    """The error for an HTTP error status (``error_type``: the body's error type, if any)."""
    in_stream = status < 300
    if in_stream:  # an error event inside a streamed reply: only its type tells
        status = _STATUS_OF_ERROR_TYPE.get(error_type, 500)
    if status == 429:
        reason, what = "PROVIDER_RATE_LIMITED", "rate limited the request"
    elif status >= 500 or status in (408, 409):
        reason, what = "PROVIDER_UNAVAILABLE", "is unavailable"
    elif status in (401, 403):
        reason, what = "PROVIDER_AUTH_FAILED", "refused the credentials"
    elif status == 404:
        reason, what = "PROVIDER_MODEL_NOT_FOUND", "does not know the model or endpoint"
    elif status in (400, 413, 422):
        reason, what = "PROVIDER_BAD_REQUEST", "rejected the request"
    else:
        reason, what = "PROVIDER_ERROR", "reported an error"
    detail = f"{error_type or 'error'} event in the stream" if in_stream else f"HTTP {status}"
    return ProviderError(
        reason,
        f"The language-model provider {provider!r} {what} ({detail}).",
        provider=provider,
        before_first_token=before_first_token,
        retry_after=_retry_after(headers),
    )


def unreachable(*, provider: str, before_first_token: bool, timeout: bool) -> ProviderError:
    if timeout:
        reason, what = "PROVIDER_TIMEOUT", "did not answer in time"
    else:
        reason, what = "PROVIDER_UNREACHABLE", "could not be reached or dropped the connection"
    return ProviderError(
        reason,
        f"The language-model provider {provider!r} {what}.",
        provider=provider,
        before_first_token=before_first_token,
    )


def truncated(*, provider: str, before_first_token: bool) -> ProviderError:
    return ProviderError(
        "PROVIDER_STREAM_TRUNCATED",
        f"The language-model provider {provider!r} ended the stream without finishing the reply.",
        provider=provider,
        before_first_token=before_first_token,
    )


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            return max(0.0, float(raw) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


__all__ = ["ProviderError", "ProviderFailure", "from_status", "truncated", "unreachable"]
