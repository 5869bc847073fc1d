"""Errors raised by the pure protocol layer.

They carry no HTTP status: the API layers map them to Matrix errors at the edge.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Base class for every rule violation found by `homeserver.protocol`."""


class InvalidIdentifier(ProtocolError):
    """An identifier (user, room, event id, server name, alias) breaks the grammar."""


class CanonicalJSONError(ProtocolError):
    """A value cannot be encoded as canonical JSON (float, out-of-range integer, bad key)."""


class Base64Error(ProtocolError):
    """Input is not valid unpadded base64."""


class SignatureError(ProtocolError):
    """A signature is missing, malformed, or does not verify."""


class HashMismatch(ProtocolError):
    """The content hash of an event does not match its `hashes.sha256`."""


class EventFormatError(ProtocolError):
    """A PDU breaks the event format rules of its room version."""


class UnknownRoomVersion(ProtocolError):
    """The room version is not one this server implements."""


class AuthError(ProtocolError):
    """An event fails the authorization rules.

    `rule` names the spec rule that failed (e.g. ``"4.2"`` for the member-event join rules), so logs and
    tests can say exactly which check refused the event.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"auth rule {rule}: {message}")
        self.rule = rule
        self.reason = message
