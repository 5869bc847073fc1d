"""Identifier grammar (spec: appendices.md "Identifier Grammar"), checked against the spec's examples."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.identifiers import (
    EventIdFormat,
    HostKind,
    RoomAlias,
    RoomIdFormat,
    Sigil,
    UserID,
    event_id_format,
    is_valid_event_id,
    is_valid_localpart,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    localpart_from_username,
    parse_event_id,
    parse_room_id,
    parse_server_name,
    room_id_format,
    sigil_of,
)

from .vectors import load

VECTORS: dict[str, Any] = load("identifiers.json")

# Example ids printed in the spec: rooms/v3 and rooms/fragments/v4-event-ids, the pdu_v1 and pdu_v12 schemas.
V1_EVENT_ID = "$a4ecee13e2accdadf56c1025:example.com"
V3_EVENT_ID = "$CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"
V4_EVENT_ID = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
V12_ROOM_ID = "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"


# --- server names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", VECTORS["server_name"]["valid_examples_from_spec"])
def test_spec_server_name_examples_are_valid_and_round_trip(name: str) -> None:
    parsed = parse_server_name(name)
    assert str(parsed) == name
    assert is_valid_server_name(name)


@pytest.mark.parametrize(
    ("name", "host", "port", "kind"),
    [
        ("matrix.org", "matrix.org", None, HostKind.DNS),
        ("matrix.org:8888", "matrix.org", 8888, HostKind.DNS),
        ("1.2.3.4", "1.2.3.4", None, HostKind.IPV4),
        ("1.2.3.4:1234", "1.2.3.4", 1234, HostKind.IPV4),
        ("[1234:5678::abcd]", "[1234:5678::abcd]", None, HostKind.IPV6),
        ("[1234:5678::abcd]:5678", "[1234:5678::abcd]", 5678, HostKind.IPV6),
        ("localhost:0", "localhost", 0, HostKind.DNS),
        ("a:65535", "a", 65535, HostKind.DNS),
        ("1.2.3", "1.2.3", None, HostKind.DNS),  # not four numbers: a dns-name by the grammar
        ("[::ffff:1.2.3.4]", "[::ffff:1.2.3.4]", None, HostKind.IPV6),
    ],
)
def test_server_name_parts(name: str, host: str, port: int | None, kind: HostKind) -> None:
    parsed = parse_server_name(name)
    assert (parsed.host, parsed.port, parsed.kind) == (host, port, kind)


def test_ip_literal_strips_brackets() -> None:
    assert parse_server_name("[1234:5678::abcd]:5678").ip_literal == "1234:5678::abcd"
    assert parse_server_name("1.2.3.4").ip_literal == "1.2.3.4"
    assert parse_server_name("matrix.org").ip_literal is None


def test_server_names_are_case_sensitive_and_keep_their_text() -> None:
    # spec: appendices.md "Server Name" — @user:matrix.org is not @user:MATRIX.ORG
    assert parse_server_name("matrix.org") != parse_server_name("MATRIX.ORG")
    # a zero-padded port is a different server name string; it must survive parsing
    padded = parse_server_name("matrix.org:08448")
    assert padded.port == 8448 and str(padded) == "matrix.org:08448"
    assert padded != parse_server_name("matrix.org:8448")


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("", "empty"),
        (":8448", "empty hostname"),
        ("matrix.org:", "port"),
        ("matrix.org:123456", "port"),
        ("matrix.org:65536", "above 65535"),
        ("matrix.org:-1", "port"),
        ("matrix.org:80:80", "port"),
        ("matrix.org:８０", "port"),  # fullwidth digits are not DIGIT
        ("256.1.1.1", "octet"),
        ("1.2.3.999:80", "octet"),
        ("ex_ample.org", "hostname"),
        ("mat rix.org", "hostname"),
        ("matrix.org/", "hostname"),
        ("例え.jp", "hostname"),
        ("١.٢.٣.٤", "hostname"),  # Arabic-Indic digits are not DIGIT
        ("a" * 256, "hostname"),
        ("[::1", "unclosed"),
        ("[::1]x", "junk"),
        ("[::1]:", "port"),
        ("[]", "IPv6"),
        ("[1234:5678::abcd::1]", "IPv6"),
        ("[12345::1]", "IPv6"),
        ("[fe80::1%eth0]", "IPv6"),
        ("[1.2.3.4]", "IPv6"),
        ("[" + "1:" * 30 + "1]", "IPv6"),
    ],
)
def test_invalid_server_names(name: str, complaint: str) -> None:
    with pytest.raises(InvalidIdentifier, match=complaint):
        parse_server_name(name)
    assert not is_valid_server_name(name)


def test_server_name_dns_name_limit_is_255() -> None:
    assert is_valid_server_name("a" * 255)
    assert is_valid_server_name("a" * 255 + ":8448")


def test_non_string_server_name() -> None:
    with pytest.raises(InvalidIdentifier, match="string"):
        parse_server_name(42)  # type: ignore[arg-type]
    assert not is_valid_server_name(None)  # type: ignore[arg-type]


# --- user ids ---------------------------------------------------------------------------------


def test_user_id_char_set_from_the_grammar() -> None:
    user = VECTORS["user_id"]
    assert user["max_length_bytes"] == 255
    # user_id_char = DIGIT / %x61-7A / "-" / "." / "=" / "_" / "/" / "+"
    assert '%x61-7A / "-" / "." / "=" / "_" / "/" / "+"' in user["grammar_abnf"]
    allowed = set("0123456789abcdefghijklmnopqrstuvwxyz-.=_/+")
    for code_point in range(0x20, 0x7F):
        assert is_valid_localpart(chr(code_point)) == (chr(code_point) in allowed), chr(code_point)


@pytest.mark.parametrize(
    "user_id",
    [
        "@alice:matrix.org",
        "@a-b.c=d_e/f+g:example.com",
        "@0:1.2.3.4:8448",
        "@bob:[1234:5678::abcd]:5678",
        "@someone:matrix.org:8888",
    ],
)
def test_valid_user_ids(user_id: str) -> None:
    parsed = UserID.parse(user_id)
    assert str(parsed) == user_id
    assert parsed.is_strict and parsed.is_compliant
    assert is_valid_user_id(user_id) and is_valid_user_id(user_id, historical=True)


def test_user_id_parts() -> None:
    parsed = UserID.parse("@bob:[::1]:8448")
    assert parsed.localpart == "bob"
    assert str(parsed.server_name) == "[::1]:8448"
    assert parsed.server_name.port == 8448


@pytest.mark.parametrize(
    ("user_id", "complaint"),
    [
        ("alice:matrix.org", "must start with '@'"),
        ("!alice:matrix.org", "must start with '@'"),
        ("@alice", "no ':'"),
        ("@:matrix.org", "empty localpart"),
        ("@Alice:matrix.org", "localpart"),
        ("@al ice:matrix.org", "localpart"),
        ("@alice*:matrix.org", "localpart"),
        ("@alicé:matrix.org", "localpart"),
        ("@alice:", "server name"),
        ("@alice:bad_server", "server name"),
        ("@alice:matrix.org:99999", "server name"),
    ],
)
def test_invalid_strict_user_ids(user_id: str, complaint: str) -> None:
    with pytest.raises(InvalidIdentifier, match=complaint):
        UserID.parse(user_id)
    assert not is_valid_user_id(user_id)


@pytest.mark.parametrize(
    "user_id",
    ["@Alice:matrix.org", "@:matrix.org", "@\x01ctrl:matrix.org", "@alicé:matrix.org", "@a b*c:matrix.org", "@😀:x"],
)
def test_historical_user_ids_are_accepted_leniently(user_id: str) -> None:
    # spec: appendices.md "Historical User IDs" — MUST accept any non-surrogate code point but ':' and NUL
    assert "non-surrogate" in VECTORS["user_id"]["historical_ids"]
    assert not is_valid_user_id(user_id)
    parsed = UserID.parse(user_id, historical=True)
    assert str(parsed) == user_id
    assert not parsed.is_strict


@pytest.mark.parametrize(
    ("user_id", "complaint"),
    [("@a\x00b:matrix.org", "U\\+0000"), ("@a\ud800:matrix.org", "U\\+D800"), ("@alice:", "server name")],
)
def test_historical_user_ids_still_refuse_nul_surrogates_and_bad_servers(user_id: str, complaint: str) -> None:
    with pytest.raises(InvalidIdentifier, match=complaint):
        UserID.parse(user_id, historical=True)


def test_compliance_is_about_printable_ascii_and_non_empty() -> None:
    # spec: appendices.md "Historical User IDs" — outside U+0021..U+007E or empty is non-compliant
    assert UserID.parse("@Alice:x", historical=True).is_compliant
    assert not UserID.parse("@alicé:x", historical=True).is_compliant
    assert not UserID.parse("@:x", historical=True).is_compliant
    assert not UserID.parse("@a b:x", historical=True).is_compliant


def test_user_id_length_limit_is_255_bytes() -> None:
    server = "example.org"
    longest = "@" + "a" * (255 - len(server) - 2) + ":" + server
    assert len(longest.encode()) == 255
    assert is_valid_user_id(longest)
    with pytest.raises(InvalidIdentifier, match="255 bytes"):
        UserID.parse("@a" + longest[1:])
    # bytes, not code points: 2-byte é makes a 130-code-point id too long
    wide = "@" + "é" * 125 + ":example.org"
    assert len(wide) < 255 < len(wide.encode())
    with pytest.raises(InvalidIdentifier, match="255 bytes"):
        UserID.parse(wide, historical=True)


def test_is_valid_localpart() -> None:
    assert is_valid_localpart("alice.bob=1/2+3_4-5")
    assert not is_valid_localpart("")
    assert not is_valid_localpart("Alice")
    assert is_valid_localpart("Alice", historical=True)
    assert is_valid_localpart("", historical=True)
    assert not is_valid_localpart("a:b", historical=True)
    assert not is_valid_localpart("a\x00", historical=True)
    assert not is_valid_localpart(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", VECTORS["user_id"]["suggested_mapping_examples_from_spec"])
def test_spec_mapping_examples(case: dict[str, str]) -> None:
    distinguish = case["input"] == "A"  # the spec's `_a` is the case-preserving variant
    assert localpart_from_username(case["input"], distinguish_case=distinguish) == case["output"]


def test_mapping_details() -> None:
    # spec: appendices.md "Mapping from other character sets"
    assert localpart_from_username("Alice") == "alice"
    assert localpart_from_username("Alice_B", distinguish_case=True) == "_alice___b"
    assert localpart_from_username("a=b") == "a=3db"
    assert localpart_from_username("a b") == "a=20b"


@given(st.text(min_size=1, max_size=40))
def test_mapping_always_yields_a_strict_localpart(name: str) -> None:
    assert is_valid_localpart(localpart_from_username(name))
    assert is_valid_localpart(localpart_from_username(name, distinguish_case=True))


@given(st.text(min_size=1, max_size=40))
def test_case_preserving_mapping_is_injective_on_case(name: str) -> None:
    if name.lower() != name:
        assert localpart_from_username(name, distinguish_case=True) != localpart_from_username(
            name.lower(), distinguish_case=True
        )


# --- room ids ---------------------------------------------------------------------------------


def test_room_id_vector_formats() -> None:
    formats = VECTORS["room_id"]["formats"]
    assert "!opaque_id:domain" in formats["v1-v11"]
    assert "URL-safe unpadded base64" in formats["v12"]


def test_room_id_with_domain() -> None:
    parsed = parse_room_id("!abc123:matrix.org")
    assert parsed.format is RoomIdFormat.WITH_DOMAIN
    assert parsed.opaque_id == "abc123" and str(parsed.server_name) == "matrix.org"
    assert parsed.create_event_id is None
    assert str(parsed) == "!abc123:matrix.org"
    for version in ("1", "6", "11"):
        assert is_valid_room_id("!abc123:matrix.org", version)
        assert not is_valid_room_id(V12_ROOM_ID, version)


def test_room_id_from_create_event() -> None:
    parsed = parse_room_id(V12_ROOM_ID)
    assert parsed.format is RoomIdFormat.CREATE_EVENT_HASH
    assert parsed.server_name is None
    assert parsed.create_event_id == "$" + V12_ROOM_ID[1:]
    assert str(parsed) == V12_ROOM_ID
    assert parse_room_id(V12_ROOM_ID, "12") == parsed
    with pytest.raises(InvalidIdentifier, match="43 URL-safe"):
        parse_room_id("!abc123:matrix.org", "12")


def test_v12_room_id_from_the_signing_vectors() -> None:
    derived = load("signing.json")["v12_room_id_derived"]
    assert parse_room_id(derived["room_id"], "12").create_event_id == derived["event_id"]


def test_room_id_format_per_version() -> None:
    assert room_id_format("11") is RoomIdFormat.WITH_DOMAIN
    assert room_id_format("12") is RoomIdFormat.CREATE_EVENT_HASH


@pytest.mark.parametrize(
    ("room_id", "complaint"),
    [
        ("abc:matrix.org", "must start with '!'"),
        ("!abc", "43 URL-safe"),
        ("!" + "a" * 42, "43 URL-safe"),
        ("!" + "a" * 44, "43 URL-safe"),
        ("!" + "a" * 42 + "+", "43 URL-safe"),
        ("!a\x00b:matrix.org", "U\\+0000"),
        ("!abc:bad_server", "server name"),
        ("!" + "a" * 250 + ":matrix.org", "255 bytes"),
    ],
)
def test_invalid_room_ids(room_id: str, complaint: str) -> None:
    with pytest.raises(InvalidIdentifier, match=complaint):
        parse_room_id(room_id)


def test_room_id_localpart_may_hold_any_other_code_point() -> None:
    # spec: appendices.md "Room IDs" — including control characters
    assert is_valid_room_id("!\x01é😀 Z:matrix.org", "1")


# --- room aliases -----------------------------------------------------------------------------


def test_room_alias_vector_facts() -> None:
    assert "<=255 bytes" in VECTORS["room_alias"]["format"]


def test_room_aliases() -> None:
    alias = RoomAlias.parse("#Room Ü:matrix.org:8448")
    assert alias.localpart == "Room Ü" and alias.server_name.port == 8448
    assert str(alias) == "#Room Ü:matrix.org:8448"
    assert is_valid_room_alias("#:matrix.org")  # the spec sets no minimum length
    for bad in ("room:matrix.org", "#room", "#ro\x00om:matrix.org", "#room:", "#a:b:c", "#" + "a" * 250 + ":x.org"):
        assert not is_valid_room_alias(bad), bad
    with pytest.raises(InvalidIdentifier, match="room alias"):
        RoomAlias.parse("#room")


# --- event ids --------------------------------------------------------------------------------


def test_event_id_vector_facts() -> None:
    assert VECTORS["event_id"]["max_length_bytes"] == 255
    assert set(VECTORS["event_id"]["formats"]) == {"v1-v2", "v3", "v4+"}


@pytest.mark.parametrize(
    ("version", "fmt"),
    [("1", EventIdFormat.WITH_DOMAIN), ("2", EventIdFormat.WITH_DOMAIN), ("3", EventIdFormat.BASE64)]
    + [(str(v), EventIdFormat.URLSAFE_BASE64) for v in range(4, 13)],
)
def test_event_id_format_per_version(version: str, fmt: EventIdFormat) -> None:
    assert event_id_format(version) is fmt


def test_event_ids_per_version() -> None:
    assert is_valid_event_id(V1_EVENT_ID, "1") and is_valid_event_id(V1_EVENT_ID, "2")
    assert not is_valid_event_id(V1_EVENT_ID, "3") and not is_valid_event_id(V1_EVENT_ID, "4")
    assert is_valid_event_id(V3_EVENT_ID, "3") and not is_valid_event_id(V3_EVENT_ID, "1")
    assert is_valid_event_id(V4_EVENT_ID, "4") and is_valid_event_id(V4_EVENT_ID, "12")
    assert not is_valid_event_id(V4_EVENT_ID, "3")  # '-' and '_' are not standard base64
    standard_only = "$" + "a+/" * 14 + "a"
    assert is_valid_event_id(standard_only, "3") and not is_valid_event_id(standard_only, "4")
    # without a version, any of the three forms
    for event_id in (V1_EVENT_ID, V3_EVENT_ID, V4_EVENT_ID, standard_only):
        assert is_valid_event_id(event_id)


def test_event_ids_from_the_signing_vectors() -> None:
    ids = load("signing.json")["reference_hash_and_event_ids_derived"]["event_id_by_room_version"]
    for version, event_id in ids.items():
        assert is_valid_event_id(event_id, version)


def test_event_id_parts() -> None:
    parsed = parse_event_id(V1_EVENT_ID, "1")
    assert parsed.opaque_id == "a4ecee13e2accdadf56c1025" and str(parsed.server_name) == "example.com"
    assert str(parsed) == V1_EVENT_ID
    hashed = parse_event_id(V4_EVENT_ID, "10")
    assert hashed.server_name is None and str(hashed) == V4_EVENT_ID


@pytest.mark.parametrize(
    ("event_id", "version", "complaint"),
    [
        ("abc:matrix.org", "1", "must start with '\\$'"),
        ("$abc", "1", "no ':'"),
        ("$abc:bad_server", "1", "server name"),
        ("$a\x00:matrix.org", "1", "U\\+0000"),
        ("$" + "a" * 250 + ":matrix.org", "1", "255 bytes"),
        ("$" + "a" * 42, "3", "43 unpadded base64"),
        ("$" + "a" * 44, "4", "43 URL-safe"),
        ("$" + "a" * 42 + "=", "4", "43 URL-safe"),
        ("$abc:matrix.org", "4", "43 URL-safe"),
        ("$abc", None, "neither"),
        ("$" + "a+" * 21 + "-", None, "neither"),  # mixes the two alphabets
    ],
)
def test_invalid_event_ids(event_id: str, version: str | None, complaint: str) -> None:
    with pytest.raises(InvalidIdentifier, match=complaint):
        parse_event_id(event_id, version)


# --- sigils -----------------------------------------------------------------------------------


def test_sigils() -> None:
    assert sigil_of("@a:b") is Sigil.USER
    assert sigil_of("!a:b") is Sigil.ROOM
    assert sigil_of("$a") is Sigil.EVENT
    assert sigil_of("#a:b") is Sigil.ROOM_ALIAS
    for bad in ("", "a:b", "%x"):
        with pytest.raises(InvalidIdentifier):
            sigil_of(bad)


# --- properties -------------------------------------------------------------------------------

_dns_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.", min_size=1, max_size=255
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).flatmap(
    lambda a: st.sampled_from([f"[{a.compressed}]", f"[{a.exploded}]", f"[{a.exploded.upper()}]"])
)
_ports = st.integers(0, 65535).flatmap(lambda p: st.sampled_from([str(p), str(p).zfill(5)]))
_hosts = st.one_of(_dns_names.filter(lambda h: not _looks_like_bad_ipv4(h)), _ipv4, _ipv6)
_server_names = st.tuples(_hosts, st.none() | _ports).map(lambda hp: hp[0] if hp[1] is None else f"{hp[0]}:{hp[1]}")


def _looks_like_bad_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and 1 <= len(p) <= 3 for p in parts) and any(int(p) > 255 for p in parts)


@given(_server_names)
def test_generated_server_names_round_trip(name: str) -> None:
    parsed = parse_server_name(name)
    assert str(parsed) == name
    if parsed.kind is HostKind.IPV6:
        assert parsed.ip_literal is not None
        ipaddress.IPv6Address(parsed.ip_literal)
    if parsed.port is not None:
        assert int(name.rsplit(":", 1)[1]) == parsed.port


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.=_/+", min_size=1, max_size=60), _server_names)
def test_generated_user_ids_round_trip(localpart: str, server: str) -> None:
    user_id = f"@{localpart}:{server}"
    if len(user_id.encode()) > 255:
        assert not is_valid_user_id(user_id)
        return
    parsed = UserID.parse(user_id)
    assert (parsed.localpart, str(parsed.server_name), str(parsed)) == (localpart, server, user_id)


@given(st.text(max_size=60).filter(lambda s: ":" not in s and "\x00" not in s), _server_names)
def test_any_historical_localpart_is_accepted(localpart: str, server: str) -> None:
    user_id = f"@{localpart}:{server}"
    if len(user_id.encode()) <= 255:
        assert str(UserID.parse(user_id, historical=True)) == user_id


_sigil_prefixed = st.tuples(st.sampled_from(["", "@", "!", "$", "#", "["]), st.text(max_size=80)).map("".join)
_fuzz = st.one_of(
    _sigil_prefixed,
    st.text(alphabet=st.characters() | st.characters(categories=["Cs"]), max_size=80),  # lone surrogates too
    st.tuples(_sigil_prefixed, st.sampled_from([":", ":[", "]:"]), st.text(max_size=40)).map("".join),
)


@given(_fuzz, st.sampled_from([None, "1", "3", "4", "12"]))
def test_parsers_raise_only_invalid_identifier(text: str, version: str | None) -> None:
    parsers: list[Callable[[str], object]] = [
        parse_server_name,
        UserID.parse,
        lambda s: UserID.parse(s, historical=True),
        RoomAlias.parse,
        lambda s: parse_room_id(s, version),
        lambda s: parse_event_id(s, version),
        sigil_of,
    ]
    for parse in parsers:
        try:
            parsed = parse(text)
        except InvalidIdentifier:
            continue
        if not isinstance(parsed, Sigil):
            assert str(parsed) == text
