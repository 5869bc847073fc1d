"""The OAuth 2.0 error answer: `{"error", "error_description"}` with an HTTP status, as RFC 6749
section 5.2 (token endpoint), RFC 7591 section 3.2.2 (registration), RFC 8628 section 3.5 (device
polling) and RFC 7009 section 2.2.1 (revocation) define it. Not a Matrix error: OAuth clients read
`error`, never `errcode`."""

from __future__ import annotations


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def to_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}
