"""Domain errors. They carry no HTTP status: `app.api.problems` maps each class to one."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class; `detail` is a human sentence, `extra` adds machine-readable members."""

    slug = "error"
    title = "Error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    slug, title = "not-found", "Not found"


class Conflict(DomainError):
    slug, title = "conflict", "Conflict"


class IdentifierInUse(Conflict):
    slug, title = "identifier-in-use", "Identifier already in use"


class BaselineExists(Conflict):
    slug, title = "baseline-exists", "The patient already has an active baseline"


class IdempotencyInFlight(Conflict):
    slug, title = "idempotency-in-flight", "A request with this Idempotency-Key is in progress"


class InvalidInput(DomainError):
    """Well-formed input that breaks a rule; `errors` lists (pointer, detail) pairs."""

    slug, title = "validation-error", "Invalid input"

    def __init__(self, pointer: str, detail: str) -> None:
        super().__init__(f"{pointer or 'body'}: {detail}")
        self.errors = [{"pointer": pointer, "detail": detail}]


class InvalidParameter(DomainError):
    slug, title = "validation-error", "Invalid input"

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.errors = [{"parameter": parameter, "detail": detail}]


class IdempotencyKeyReused(DomainError):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with a different body"


class PreconditionRequired(DomainError):
    slug, title = "precondition-required", "If-Match header required"


class PreconditionFailed(DomainError):
    slug, title = "precondition-failed", "The record changed since you read it"


class Unauthenticated(DomainError):
    slug, title = "unauthenticated", "Authentication required"


class Forbidden(DomainError):
    slug, title = "forbidden", "Not allowed"


class RateLimited(DomainError):
    slug, title = "rate-limited", "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
