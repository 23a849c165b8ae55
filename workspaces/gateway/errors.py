"""The gateway's answers when a call is refused or failed, in OpenAI's error format
`{"error": {"message", "type", "code", "param"}}`: our own errors (GatewayError), an exhausted
budget (429), a domain refusal, a provider's error; and which of them a client must not retry
(`x-should-retry: false`). Errors that come from the provider say so and never use 401 (which
here means "your llmconn key is not valid")."""

from __future__ import annotations

from django.http import JsonResponse

from llmconn.errors import ApplicationError
from llmconn.throttling import gateway_rate
from providers.errors import ProviderError

from .. import calls
from ..budgets import BudgetExceeded

# Statuses a retry cannot fix: OpenAI's SDKs retry 408, 409, 429 and 5xx unless the answer
# says `x-should-retry: false` (https://github.com/openai/openai-python, _should_retry).
NO_RETRY_CODES = frozenset({
    "forbidden_parameter", "provider_auth_failed", "provider_blocked", "connection_inactive",
    "unsupported_parameter", "unsupported_endpoint", "request_too_large", "role_not_configured",
})


class GatewayError(Exception):
    """An error of ours (not the provider's) in OpenAI's error format."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 type_: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = (
            status, message, code, type_, param)

    def response(self) -> JsonResponse:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": self.param}}
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="llmconn"'
        if _no_retry(self.status, self.code):
            headers["x-should-retry"] = "false"
        return JsonResponse(body, status=self.status, headers=headers)


class GatewayThrottled(GatewayError):
    """429 for a key past LLMCONN_THROTTLE_GATEWAY, in OpenAI's format (as OpenAI rate-limits:
    type "requests"), with Retry-After."""

    def __init__(self, wait: float):
        self.wait = int(wait + 0.999)
        super().__init__(
            429, f"Rate limit reached for this API key: try again in {self.wait} s "
            f"(limit LLMCONN_THROTTLE_GATEWAY={gateway_rate()}).",
            code="rate_limit_exceeded", type_="requests")

    def response(self) -> JsonResponse:
        response = super().response()
        response["Retry-After"] = str(self.wait)
        return response


def _no_retry(status: int, code: str | None) -> bool:
    """True for an answer a client must not retry (a 4xx other than 408/409/429, or one of
    NO_RETRY_CODES)."""
    return code in NO_RETRY_CODES or (400 <= status < 500 and status not in (408, 409, 429))


def _provider_error_response(err: ProviderError, attempt: calls.Attempt | None
                             ) -> JsonResponse:
    headers = {}
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
    if not err.should_retry:
        headers["x-should-retry"] = "false"
    if attempt is not None:
        headers.update(_answer_headers(attempt))
    return JsonResponse(err.as_openai(), status=err.status, headers=headers)


def _answer_headers(attempt: calls.Attempt) -> dict:
    """Which connection answered (or failed last), and after how many tries."""
    return {"x-llmconn-connection": attempt.resolved.connection_name,
            "x-llmconn-attempt": str(attempt.number)}


def _budget_response(exc: BudgetExceeded) -> JsonResponse:
    """429 in OpenAI's format naming the budget and when it resets; SDKs must not retry."""
    body = {"error": {"message": exc.message, "type": "insufficient_quota", "code": exc.code,
                      "param": None, "budget": exc.budget}}
    return JsonResponse(body, status=429, headers={
        "Retry-After": str(exc.retry_after), "x-should-retry": "false",
        "x-llmconn-budget": str(exc.budget["id"])})


def _application_error(exc: ApplicationError) -> GatewayError:
    status = exc.status_code
    return GatewayError(status, exc.message, code=exc.code,
                        type_="invalid_request_error" if status < 500 else "server_error")


# What can stop a call before any provider answered: a bad request, an exhausted budget, a
# domain refusal (role not configured...), or a failure while resolving (e.g. OAuth token).
REFUSALS = (GatewayError, BudgetExceeded, ApplicationError, ProviderError)


def _refusal_response(exc: Exception) -> JsonResponse:
    """The response for one of REFUSALS, in OpenAI's error format."""
    if isinstance(exc, GatewayError):
        return exc.response()
    if isinstance(exc, BudgetExceeded):
        return _budget_response(exc)
    if isinstance(exc, ApplicationError):
        return _application_error(exc).response()
    return _provider_error_response(exc, None)


def _method_not_allowed(allowed: str) -> JsonResponse:
    return GatewayError(405, f"Method not allowed: use {allowed}.",
                        code="method_not_allowed").response()
