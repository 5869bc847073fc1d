"""Matrix identifiers: server names, user ids, room ids, room aliases and event ids.

spec: appendices.md "Identifier Grammar". Parsers return small frozen values that remember
exactly what they were given (identifiers are compared as case-sensitive strings, so
`str(parse(x)) == x` always holds) and raise `InvalidIdentifier` naming the broken rule.
Nothing else ever escapes them, whatever the input: they face the network.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import ClassVar, Final

from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version

# spec: appendices.md "User Identifiers", "Room IDs", "Room Aliases", "Event IDs" — 255 bytes each
MAX_IDENTIFIER_BYTES = 255

# spec: appendices.md "Server Name" grammar; [0-9] not \d, which would match any Unicode digit
_PORT = re.compile(r"[0-9]{1,5}")
_IPV4_SHAPE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_DNS_NAME = re.compile(r"[0-9A-Za-z.\-]{1,255}")
# spec: appendices.md "User Identifiers": user_id_char = DIGIT / a-z / "-" / "." / "=" / "_" / "/" / "+"
_USER_LOCALPART = re.compile(r"[a-z0-9.=_/+\-]+")
# spec: appendices.md "Historical User IDs", "Room IDs", "Room Aliases": no ':' or NUL, no surrogates
_OPAQUE_FORBIDDEN = re.compile(r"[:\x00\ud800-\udfff]")
# spec: appendices.md "Historical User IDs": compliant localparts are non-empty U+0021..U+007E
_COMPLIANT_LOCALPART = re.compile(r"[\x21-\x7e]+")
# spec: server-server-api.md "Calculating the reference hash": sha256 is 32 bytes, 43 unpadded chars
_REFERENCE_HASH_STD = re.compile(r"[A-Za-z0-9+/]{43}")  # spec: rooms/v3 event ids
_REFERENCE_HASH_URLSAFE = re.compile(r"[A-Za-z0-9\-_]{43}")  # spec: rooms/v4 event ids, rooms/v12 room ids


class Sigil(enum.StrEnum):
    """spec: appendices.md "Common Identifier Format"."""

    USER = "@"
    ROOM = "!"
    EVENT = "$"
    ROOM_ALIAS = "#"


class HostKind(enum.Enum):
    DNS = "dns"
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class RoomIdFormat(enum.Enum):
    """spec: appendices.md "Room IDs"."""

    WITH_DOMAIN = "with_domain"  # rooms v1–v11: `!opaque_id:domain`
    CREATE_EVENT_HASH = "create_event_hash"  # rooms v12: the create event's id with `!` for `$`


class EventIdFormat(enum.Enum):
    """spec: appendices.md "Event IDs" and the rooms/vN "Event IDs" sections."""

    WITH_DOMAIN = "with_domain"  # rooms v1–v2: `$opaque_id:domain`
    BASE64 = "base64"  # room v3: reference hash, standard unpadded base64
    URLSAFE_BASE64 = "urlsafe_base64"  # rooms v4+: reference hash, URL-safe unpadded base64


def _show(s: str) -> str:
    """A bounded repr for error messages: inputs may be megabytes long."""
    return repr(s) if len(s) <= 80 else repr(s[:77]) + "..."


def sigil_of(s: str) -> Sigil:
    """The sigil an identifier starts with, or `InvalidIdentifier`."""
    if not isinstance(s, str) or not s:
        raise InvalidIdentifier("identifier must be a non-empty string")
    try:
        return Sigil(s[0])
    except ValueError:
        raise InvalidIdentifier(f"identifier {_show(s)} does not start with a sigil (@ ! $ #)") from None


def _check_string(s: object, what: str) -> str:
    if not isinstance(s, str):
        raise InvalidIdentifier(f"{what} must be a string, not {type(s).__name__}")
    return s


def _check_length(s: str, what: str) -> None:
    # Code points never outnumber UTF-8 bytes, so the cheap test goes first.
    if len(s) > MAX_IDENTIFIER_BYTES or len(s.encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES:
        raise InvalidIdentifier(f"{what} {_show(s)} is longer than {MAX_IDENTIFIER_BYTES} bytes")


def _split_domain_form(s: str, sigil: Sigil, what: str) -> tuple[str, ServerName]:
    """Split `&localpart:domain` at the first ':' (localparts never contain one)."""
    if not s.startswith(sigil.value):
        raise InvalidIdentifier(f"{what} {_show(s)} must start with {sigil.value!r}")
    localpart, sep, domain = s[1:].partition(":")
    if not sep:
        raise InvalidIdentifier(f"{what} {_show(s)} has no ':' between its localpart and server name")
    try:
        server_name = parse_server_name(domain)
    except InvalidIdentifier as e:
        raise InvalidIdentifier(f"{what} {_show(s)} has a bad server name: {e}") from None
    return localpart, server_name


def _check_opaque_localpart(localpart: str, whole: str, what: str) -> None:
    # spec: appendices.md "Room IDs", "Room Aliases", "Historical User IDs"
    bad = _OPAQUE_FORBIDDEN.search(localpart)
    if bad:
        code_point = f"U+{ord(bad[0]):04X}"
        raise InvalidIdentifier(f"{what} {_show(whole)} contains the forbidden code point {code_point}")


# --- server names -----------------------------------------------------------------------------


class ServerName:
    """spec: appendices.md "Server Name": `hostname [ ":" port ]`, compared case-sensitively.

    `text` is the name exactly as written (a port `08448` stays so); `host` keeps an IPv6
    literal's brackets.
    """

    __slots__ = ("host", "kind", "port", "text")

    text: Final[str]
    host: Final[str]
    port: Final[int | None]
    kind: Final[HostKind]

    def __init__(self, text: str, host: str, port: int | None, kind: HostKind) -> None:
        self.text = text
        self.host = host
        self.port = port
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        if type(other) is not ServerName:
            return NotImplemented
        return (self.text, self.host, self.port, self.kind) == (other.text, other.host, other.port, other.kind)

    def __hash__(self) -> int:
        return hash((self.text, self.host, self.port, self.kind))

    def __repr__(self) -> str:
        return f"ServerName(text={self.text!r}, host={self.host!r}, port={self.port!r}, kind={self.kind!r})"

    def __str__(self) -> str:
        return self.text

    @property
    def ip_literal(self) -> str | None:
        """The bare IP address when the host is a literal (brackets stripped), else None."""
        if self.kind is HostKind.IPV6:
            return self.host[1:-1]
        return self.host if self.kind is HostKind.IPV4 else None


def parse_server_name(s: str) -> ServerName:
    """Parse a server name (spec: appendices.md "Server Name")."""
    s = _check_string(s, "server name")
    if not s:
        raise InvalidIdentifier("server name is empty")
    if s.startswith("["):
        close = s.find("]")
        if close < 0:
            raise InvalidIdentifier(f"server name {_show(s)} has an unclosed IPv6 literal")
        host, rest = s[: close + 1], s[close + 1 :]
        _check_ipv6(host[1:-1], s)
        kind = HostKind.IPV6
    else:
        host, colon, port_text = s.partition(":")
        rest = colon + port_text
        kind = _check_ipv4_or_dns(host, s)
    port: int | None = None
    if rest:
        if not rest.startswith(":"):
            raise InvalidIdentifier(f"server name {_show(s)} has junk after its IPv6 literal")
        port = _parse_port(rest[1:], s)
    return ServerName(text=s, host=host, port=port, kind=kind)


def _check_ipv6(literal: str, whole: str) -> None:
    # spec: appendices.md "Server Name": IPv6address = 2*45IPv6char, and valid per RFC 3513 §2.2
    if not _IPV6_CHARS.fullmatch(literal):
        raise InvalidIdentifier(f"server name {_show(whole)} has a malformed IPv6 literal")
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        raise InvalidIdentifier(f"server name {_show(whole)} has an invalid IPv6 address") from None


def _check_ipv4_or_dns(host: str, whole: str) -> HostKind:
    if not host:
        raise InvalidIdentifier(f"server name {_show(whole)} has an empty hostname")
    if _IPV4_SHAPE.fullmatch(host):
        # spec: appendices.md "Server Name": IPv4 literals are four numbers in 0–255
        if any(int(octet) > 255 for octet in host.split(".")):
            raise InvalidIdentifier(f"server name {_show(whole)} has an IPv4 octet above 255")
        return HostKind.IPV4
    # spec: appendices.md "Server Name": dns-name = 1*255dns-char (label rules are only a "should")
    if not _DNS_NAME.fullmatch(host):
        raise InvalidIdentifier(f"server name {_show(whole)}: hostname may only hold A-Z a-z 0-9 '-' '.' (max 255)")
    return HostKind.DNS


def _parse_port(text: str, whole: str) -> int:
    # spec: appendices.md "Server Name": port = 1*5DIGIT; above 65535 is no TCP port
    if not _PORT.fullmatch(text):
        raise InvalidIdentifier(f"server name {_show(whole)}: port must be 1 to 5 digits")
    port = int(text)
    if port > 65535:
        raise InvalidIdentifier(f"server name {_show(whole)}: port {port} is above 65535")
    return port


def is_valid_server_name(s: str) -> bool:
    try:
        parse_server_name(s)
    except InvalidIdentifier:
        return False
    return True


# --- user ids ---------------------------------------------------------------------------------


def is_valid_localpart(localpart: str, *, historical: bool = False) -> bool:
    """Whether a user id localpart is allowed (the whole id's 255-byte limit is checked by `UserID`).

    spec: appendices.md "User Identifiers" (strict: new ids) and "Historical User IDs"
    (`historical=True`: any non-surrogate code point but ':' and NUL, even empty — for ids
    received over federation).
    """
    if not isinstance(localpart, str):
        return False
    if historical:
        return _OPAQUE_FORBIDDEN.search(localpart) is None
    return _USER_LOCALPART.fullmatch(localpart) is not None


class _LocalpartAndServer:
    """An identifier made of a localpart and a server name (user ids, room aliases): a value, equal
    to another of its kind with the same parts."""

    __slots__ = ("localpart", "server_name")

    localpart: Final[str]
    server_name: Final[ServerName]

    def __init__(self, localpart: str, server_name: ServerName) -> None:
        self.localpart = localpart
        self.server_name = server_name

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _LocalpartAndServer)
        return self.localpart == other.localpart and self.server_name == other.server_name

    def __hash__(self) -> int:
        return hash((type(self), self.localpart, self.server_name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(localpart={self.localpart!r}, server_name={self.server_name!r})"


class UserID(_LocalpartAndServer):
    """spec: appendices.md "User Identifiers": `@localpart:domain`."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"@{self.localpart}:{self.server_name}"

    @classmethod
    def parse(cls, s: str, *, historical: bool = False) -> UserID:
        """Parse a user id; `historical=True` accepts the legacy localparts federation must accept.

        spec: appendices.md "Historical User IDs" — servers MUST accept them in events received
        over federation; use the strict form when allocating ids.
        """
        s = _check_string(s, "user ID")
        _check_length(s, "user ID")
        localpart, server_name = _split_domain_form(s, Sigil.USER, "user ID")
        if historical:
            _check_opaque_localpart(localpart, s, "user ID")
        elif not localpart:
            raise InvalidIdentifier(f"user ID {_show(s)} has an empty localpart")
        elif not _USER_LOCALPART.fullmatch(localpart):
            raise InvalidIdentifier(f"user ID {_show(s)}: localpart may only hold a-z 0-9 . _ = - / +")
        return cls(localpart, server_name)

    @property
    def is_strict(self) -> bool:
        """Whether the localpart follows today's grammar (spec: appendices.md "User Identifiers")."""
        return _USER_LOCALPART.fullmatch(self.localpart) is not None

    @property
    def is_compliant(self) -> bool:
        """False for empty localparts or ones outside U+0021–U+007E.

        spec: appendices.md "Historical User IDs" — servers SHOULD NOT forward such ids to clients
        outside the context of an event.
        """
        return _COMPLIANT_LOCALPART.fullmatch(self.localpart) is not None


def is_valid_user_id(s: str, *, historical: bool = False) -> bool:
    try:
        UserID.parse(s, historical=historical)
    except InvalidIdentifier:
        return False
    return True


def localpart_from_username(name: str, *, distinguish_case: bool = False) -> str:
    """Map any text onto the user id localpart alphabet.

    spec: appendices.md "Mapping from other character sets" (the suggested algorithm): UTF-8
    bytes, A-Z lower-cased (or escaped as `_a` with `_` doubled when case must survive), every
    other byte outside the alphabet, and `=`, written as `=xx`.
    """
    out: list[str] = []
    for byte in name.encode("utf-8", "surrogatepass"):
        ch = chr(byte)
        if "A" <= ch <= "Z":
            out.append("_" + ch.lower() if distinguish_case else ch.lower())
        elif ch == "_" and distinguish_case:
            out.append("__")
        elif ch != "=" and _USER_LOCALPART.fullmatch(ch):
            out.append(ch)
        else:
            out.append(f"={byte:02x}")
    return "".join(out)


# --- room ids ---------------------------------------------------------------------------------


class _OpaqueAndServer:
    """An identifier made of an opaque part and, in older room versions, a server name (room ids,
    event ids): a value, equal to another of its kind with the same parts. `SIGIL` starts it."""

    __slots__ = ("opaque_id", "server_name")

    SIGIL: ClassVar[str]
    opaque_id: Final[str]
    server_name: Final[ServerName | None]

    def __init__(self, opaque_id: str, server_name: ServerName | None) -> None:
        self.opaque_id = opaque_id
        self.server_name = server_name

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _OpaqueAndServer)
        return self.opaque_id == other.opaque_id and self.server_name == other.server_name

    def __hash__(self) -> int:
        return hash((type(self), self.opaque_id, self.server_name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(opaque_id={self.opaque_id!r}, server_name={self.server_name!r})"

    def __str__(self) -> str:
        if self.server_name is None:
            return f"{self.SIGIL}{self.opaque_id}"
        return f"{self.SIGIL}{self.opaque_id}:{self.server_name}"


class RoomID(_OpaqueAndServer):
    """spec: appendices.md "Room IDs": `!opaque_id:domain` (v1–v11) or `!` + create event hash (v12)."""

    __slots__ = ()
    SIGIL = "!"

    @property
    def format(self) -> RoomIdFormat:
        return RoomIdFormat.WITH_DOMAIN if self.server_name is not None else RoomIdFormat.CREATE_EVENT_HASH

    @property
    def create_event_id(self) -> str | None:
        """The `m.room.create` event id this room id names (rooms v12), else None.

        spec: appendices.md "Room IDs" — the create event's id with `!` instead of `$`.
        """
        return None if self.server_name is not None else f"${self.opaque_id}"


def room_id_format(room_version: str | RoomVersion) -> RoomIdFormat:
    """Which room id form a room version uses (spec: rooms/v12 "Event format")."""
    if get_room_version(room_version).room_id_from_create_event:
        return RoomIdFormat.CREATE_EVENT_HASH
    return RoomIdFormat.WITH_DOMAIN


def parse_room_id(s: str, room_version: str | RoomVersion | None = None) -> RoomID:
    """Parse a room id, in the form of `room_version` when given, else in either form.

    Without a version the forms are told apart by the ':' that only the domain form has.
    """
    s = _check_string(s, "room ID")
    _check_length(s, "room ID")
    if not s.startswith(Sigil.ROOM.value):
        raise InvalidIdentifier(f"room ID {_show(s)} must start with '!'")
    expected = room_id_format(room_version) if room_version is not None else None
    has_domain = ":" in s
    if expected is RoomIdFormat.CREATE_EVENT_HASH or (expected is None and not has_domain):
        # spec: appendices.md "Room IDs" — the create event's id (rooms/v4 event ids) with '!'
        if not _REFERENCE_HASH_URLSAFE.fullmatch(s, 1):
            raise InvalidIdentifier(f"room ID {_show(s)} is not '!' followed by 43 URL-safe unpadded base64 characters")
        return RoomID(s[1:], None)
    localpart, server_name = _split_domain_form(s, Sigil.ROOM, "room ID")
    _check_opaque_localpart(localpart, s, "room ID")
    return RoomID(localpart, server_name)


def is_valid_room_id(s: str, room_version: str | RoomVersion | None = None) -> bool:
    try:
        parse_room_id(s, room_version)
    except InvalidIdentifier:
        return False
    return True


# --- room aliases -----------------------------------------------------------------------------


class RoomAlias(_LocalpartAndServer):
    """spec: appendices.md "Room Aliases": `#room_alias:domain`, at most 255 bytes."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"#{self.localpart}:{self.server_name}"

    @classmethod
    def parse(cls, s: str) -> RoomAlias:
        s = _check_string(s, "room alias")
        _check_length(s, "room alias")
        localpart, server_name = _split_domain_form(s, Sigil.ROOM_ALIAS, "room alias")
        _check_opaque_localpart(localpart, s, "room alias")
        return cls(localpart, server_name)


def is_valid_room_alias(s: str) -> bool:
    try:
        RoomAlias.parse(s)
    except InvalidIdentifier:
        return False
    return True


# --- event ids --------------------------------------------------------------------------------


class EventID(_OpaqueAndServer):
    """spec: appendices.md "Event IDs": `$opaque_id:domain` (v1–v2) or `$` + reference hash (v3+)."""

    __slots__ = ()
    SIGIL = "$"


def event_id_format(room_version: str | RoomVersion) -> EventIdFormat:
    """Which event id form a room version uses (spec: rooms/v1, v3, v4 "Event IDs")."""
    fmt = get_room_version(room_version).event_format
    if fmt is EventFormat.V1:
        return EventIdFormat.WITH_DOMAIN
    return EventIdFormat.BASE64 if fmt is EventFormat.V2 else EventIdFormat.URLSAFE_BASE64


def parse_event_id(s: str, room_version: str | RoomVersion | None = None) -> EventID:
    """Parse an event id, in the form of `room_version` when given, else in any of the three forms."""
    s = _check_string(s, "event ID")
    _check_length(s, "event ID")  # spec: appendices.md "Event IDs" — at most 255 bytes in every version
    if not s.startswith(Sigil.EVENT.value):
        raise InvalidIdentifier(f"event ID {_show(s)} must start with '$'")
    fmt = event_id_format(room_version) if room_version is not None else None
    if fmt is EventIdFormat.WITH_DOMAIN or (fmt is None and ":" in s):
        # spec: rooms/fragments/v1-event-ids — `$opaque_id:domain`
        localpart, server_name = _split_domain_form(s, Sigil.EVENT, "event ID")
        _check_opaque_localpart(localpart, s, "event ID")
        return EventID(localpart, server_name)
    if fmt is EventIdFormat.BASE64:
        # spec: rooms/v3 "Event IDs" — reference hash in standard unpadded base64
        if not _REFERENCE_HASH_STD.fullmatch(s, 1):
            raise InvalidIdentifier(f"event ID {_show(s)} is not '$' followed by 43 unpadded base64 characters")
    elif fmt is EventIdFormat.URLSAFE_BASE64:
        # spec: rooms/fragments/v4-event-ids — reference hash in URL-safe unpadded base64
        if not _REFERENCE_HASH_URLSAFE.fullmatch(s, 1):
            raise InvalidIdentifier(
                f"event ID {_show(s)} is not '$' followed by 43 URL-safe unpadded base64 characters"
            )
    elif not (_REFERENCE_HASH_STD.fullmatch(s, 1) or _REFERENCE_HASH_URLSAFE.fullmatch(s, 1)):
        raise InvalidIdentifier(
            f"event ID {_show(s)} is neither '$opaque:domain' nor '$' and a 43-character reference hash"
        )
    return EventID(s[1:], None)


def is_valid_event_id(s: str, room_version: str | RoomVersion | None = None) -> bool:
    try:
        parse_event_id(s, room_version)
    except InvalidIdentifier:
        return False
    return True
