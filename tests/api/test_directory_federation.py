"""The public room directory and space hierarchies across servers, in-process: what another server
sees of ours, and what our clients see of another server's.

spec: server-server-api "Public Room Directory" (GET/POST /publicRooms), "Spaces" (GET
/hierarchy/{roomId}); client-server-api GET /publicRooms `server`, GET /v1/rooms/{roomId}/hierarchy.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from yarl import URL

from federation.client import FederationError
from federation.directory import RemoteDirectory
from federation.request_auth import authorization_header
from tests.api.conftest import Harness
from tests.api.test_media_federation import KEY, KEY_ID, REMOTE, fed_get, trust_remote

REMOTE_CHILD = "!remotechild:remote.test"
REMOTE_GRANDCHILD = "!grandchild:remote.test"


def q(s: str) -> str:
    return quote(s, safe="")


async def fed_post(harness: Harness, path: str, content: Any) -> tuple[int, Any]:
    raw = URL(path).raw_path_qs
    auth = authorization_header(REMOTE, "hs.test", KEY_ID, KEY, "POST", raw, content)
    resp = await harness.client.post(path, data=orjson.dumps(content), headers={"Authorization": auth})
    return resp.status, await resp.json()


async def make_room(harness: Harness, user: Any, **body: Any) -> str:
    status, answer = await harness.request("POST", "createRoom", user, json=body)
    assert status == 200, answer
    return str(answer["room_id"])


async def add_child(harness: Harness, user: Any, space: str, child: str, via: list[str]) -> None:
    path = f"rooms/{q(space)}/state/m.space.child/{q(child)}"
    status, _ = await harness.request("PUT", path, user, json={"via": via})
    assert status == 200


async def test_other_servers_see_our_directory_and_spaces(harness: Harness) -> None:
    await trust_remote(harness)
    alice = await harness.user("alice")
    public = await make_room(harness, alice, preset="public_chat", name="Lobby", visibility="public")
    private = await make_room(harness, alice, preset="private_chat", name="Secret")
    space = await make_room(harness, alice, preset="public_chat", creation_content={"type": "m.space"})
    for child in (public, private, REMOTE_CHILD):
        await add_child(harness, alice, space, child, ["hs.test"])

    status, raw = (await fed_get(harness, "/_matrix/federation/v1/publicRooms?limit=10"))[::2]
    body = orjson.loads(raw)
    assert status == 200 and [r["room_id"] for r in body["chunk"]] == [public]
    status, body = await fed_post(
        harness, "/_matrix/federation/v1/publicRooms", {"filter": {"generic_search_term": "lob"}}
    )
    assert status == 200 and [r["name"] for r in body["chunk"]] == ["Lobby"]
    status, body = await fed_post(
        harness, "/_matrix/federation/v1/publicRooms", {"filter": {"generic_search_term": "zzz"}}
    )
    assert status == 200 and body["chunk"] == []

    status, _, raw = await fed_get(harness, f"/_matrix/federation/v1/hierarchy/{q(space)}")
    body = orjson.loads(raw)
    assert status == 200
    assert body["room"]["room_id"] == space and body["room"]["room_type"] == "m.space"
    assert {c["state_key"] for c in body["room"]["children_state"]} == {public, private, REMOTE_CHILD}
    assert [c["room_id"] for c in body["children"]] == [public]  # the one it may join
    assert body["inaccessible_children"] == [private]  # the invite-only one; the unknown one is left out

    status, _, raw = await fed_get(harness, f"/_matrix/federation/v1/hierarchy/{q(private)}")
    assert status == 404 and orjson.loads(raw)["errcode"] == "M_NOT_FOUND"
    status, _, _ = await fed_get(harness, f"/_matrix/federation/v1/hierarchy/{q(space)}", sign=False)
    assert status == 401


class FakeClient:
    """Answers as another server's federation API would (a careless one: fields missing)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def request(self, server: str, method: str, path: str, **kw: Any) -> Any:
        self.asked.append((server, path))
        if path.startswith("/_matrix/federation/v1/publicRooms"):
            return {"chunk": [{"room_id": "!x:remote.test", "num_joined_members": 1}, "junk"], "next_batch": 5}
        if not path.startswith("/_matrix/federation/v1/hierarchy/" + q(REMOTE_CHILD)):
            raise FederationError(server, 404, "M_NOT_FOUND", "no")
        child_event = {
            "type": "m.space.child",
            "state_key": REMOTE_GRANDCHILD,
            "content": {"via": [REMOTE]},
            "sender": "@bob:remote.test",
            "origin_server_ts": 1,
        }
        return {
            "room": {
                "room_id": REMOTE_CHILD,
                "room_type": "m.space",
                "name": "Remote space",
                "num_joined_members": 3,
                "join_rule": "public",
                "children_state": [child_event, {"type": "m.room.name"}],
            },
            "children": [{"room_id": REMOTE_GRANDCHILD, "name": "Remote room", "join_rule": "public"}],
            "inaccessible_children": [],
        }


async def test_our_clients_browse_remote_children_and_directories(harness: Harness) -> None:
    alice = await harness.user("alice")
    space = await make_room(harness, alice, preset="public_chat", creation_content={"type": "m.space"})
    await add_child(harness, alice, space, REMOTE_CHILD, [REMOTE])
    fake = FakeClient()
    remote = RemoteDirectory(fake)  # type: ignore[arg-type]
    harness.hs.rooms.spaces.remote = remote
    harness.hs.rooms.directory.remote_rooms = remote

    status, body = await harness.request("GET", f"/_matrix/client/v1/rooms/{q(space)}/hierarchy", alice)
    assert status == 200, body
    assert [r["room_id"] for r in body["rooms"]] == [space, REMOTE_CHILD, REMOTE_GRANDCHILD]
    assert body["rooms"][1]["children_state"][0]["state_key"] == REMOTE_GRANDCHILD
    assert body["rooms"][2]["children_state"] == []
    assert [server for server, _ in fake.asked] == [REMOTE]  # the grandchild came with its parent's answer

    status, body = await harness.request("GET", f"/_matrix/client/v1/rooms/{q(space)}/hierarchy?max_depth=0", alice)
    assert [r["room_id"] for r in body["rooms"]] == [space]

    status, body = await harness.request("GET", f"publicRooms?server={REMOTE}", alice)
    assert status == 200 and [r["room_id"] for r in body["chunk"]] == ["!x:remote.test"]
    assert "next_batch" not in body  # not a string: dropped

    # Without a token our own directory is shown (the spec asks for none), but another server's is
    # not asked for an anonymous caller (Synapse refuses it too): nobody may make us call out at will.
    asked = len(fake.asked)
    status, body = await harness.request("GET", f"publicRooms?server={REMOTE}")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN", body
    assert len(fake.asked) == asked
    status, body = await harness.request("GET", "publicRooms?server=hs.test")
    assert status == 200 and "chunk" in body
    status, body = await harness.request(
        "GET", f"publicRooms?server={REMOTE}", headers={"Authorization": "Bearer nope"}
    )
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
    assert len(fake.asked) == asked
