"""Stream positions and pagination tokens from clients: out-of-range, negative, huge and malformed
values are 400 (or the endpoint's documented 404 for an unknown id), never 500 (issue 10).

Every parameter that carries a token or counter this server handed out is tried with each bad value.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from homeserver.rooms.tokens import MAX_COUNTER, parse_counter

from .conftest import Harness
from .rooms_helpers import create_room, q, send

BAD_VALUES = [
    "s18446744073709551615",  # 2^64 - 1: the position that answered 500 on /keys/changes
    "s18446744073709551616",
    "s99999999999999999999",
    f"s{MAX_COUNTER + 1}",
    "s-1",
    "t9223372036854775807",  # a timeline order of 2^64 - 1
    "t-9223372036854775809",
    "t99999999999999999999",
    "18446744073709551615",
    "99999999999999999999999",
    "-5",
    "²",  # str.isdigit() says yes, int() says no
    "s²",
    "p_²",
    "h_²_10_0",
    "m_²",
    "rank_²",
    "rank_-1",
    "recent_99999999999999999999",
    "x",
    "s1_",
    "\x00",
]


def v3(path: str) -> str:
    return "/_matrix/client/v3/" + path


def v1(path: str) -> str:
    return "/_matrix/client/v1/" + path


async def test_token_parameters_answer_400_never_500(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    event = await send(harness, alice, room, "hi")
    r, e, u = q(room), q(event), q(alice.user_id)
    templates = [
        v3("sync?timeout=0&since={t}"),
        v3("sync?timeout=0&filter={t}"),
        v3("events?timeout=0&from={t}"),
        v3(f"rooms/{r}/messages?dir=b&from={{t}}"),
        v3(f"rooms/{r}/messages?dir=f&from={{t}}"),
        v3(f"rooms/{r}/messages?dir=b&to={{t}}"),
        v3(f"rooms/{r}/members?at={{t}}"),
        v3("notifications?from={t}"),
        v3("keys/changes?from={t}&to=s1"),
        v3("keys/changes?from=s1&to={t}"),
        v3("publicRooms?since={t}"),
        v3(f"user/{u}/filter/{{t}}"),
        v3("room_keys/version/{t}"),
        v3("room_keys/keys?version={t}"),
        v1(f"rooms/{r}/relations/{e}?from={{t}}"),
        v1(f"rooms/{r}/relations/{e}?to={{t}}"),
        v1(f"rooms/{r}/threads?from={{t}}"),
        v1(f"rooms/{r}/hierarchy?from={{t}}"),
        v1(f"mutual_rooms?user_id={u}&from={{t}}"),
    ]
    failures = []
    for value in BAD_VALUES:
        for template in templates:
            path = template.format(t=quote(value, safe=""))
            status, body = await harness.request("GET", path, alice)
            # M_UNRECOGNIZED would mean the template names no route: the test would prove nothing
            if status >= 500 or (status != 200 and body.get("errcode") in (None, "M_UNRECOGNIZED")):
                failures.append(f"{path}: {status} {body}")
        for order_by in ("rank", "recent"):
            criteria = {"search_term": "hi", "order_by": order_by}
            path = v3(f"search?next_batch={quote(value, safe='')}")
            status, body = await harness.request(
                "POST", path, alice, json={"search_categories": {"room_events": criteria}}
            )
            if status != 400:
                failures.append(f"search next_batch={value!r} ({order_by}): {status} {body}")
    assert not failures, "\n".join(failures)


async def test_keys_changes_out_of_range_is_400(harness: Harness) -> None:
    alice = await harness.user("alice")
    for query in (
        "from=s18446744073709551615&to=s1",
        "from=s1&to=s18446744073709551615",
        "from=18446744073709551615&to=s1",
    ):
        status, body = await harness.request("GET", f"keys/changes?{query}", alice)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", (query, body)
    status, body = await harness.request("GET", f"keys/changes?from=s0&to=s{MAX_COUNTER}", alice)
    assert status == 200, body


@pytest.mark.parametrize("keys", [[{}], [[]], [1], [None], ["content.body", {}], "content.body", [], {}])
async def test_search_keys_of_the_wrong_type_are_400(harness: Harness, keys: object) -> None:
    alice = await harness.user("alice")
    body = {"search_categories": {"room_events": {"search_term": "hi", "keys": keys}}}
    status, answer = await harness.request("POST", "search", alice, json=body)
    assert status == 400 and answer["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM"), answer


def test_parse_counter() -> None:
    assert parse_counter("0") == 0 and parse_counter("42") == 42
    assert parse_counter(str(MAX_COUNTER)) == MAX_COUNTER
    for bad in ("", "-1", "+1", " 1", "1_000", "²", "٣", str(MAX_COUNTER + 1), "9" * 40):
        assert parse_counter(bad) is None, bad
