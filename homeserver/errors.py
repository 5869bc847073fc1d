"""The one error type of the server: raised anywhere, rendered by one wrapper (`guard` in `homeserver.api.http`)."""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """A Matrix error response: HTTP status, `errcode`, human-readable message, extra fields."""

    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.message, **self.extra}

    def __repr__(self) -> str:
        return f"MatrixError({self.status}, {self.errcode!r}, {self.message!r})"


def forbidden(message: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", message)


def not_found(message: str) -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", message)


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def invalid_param(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)
