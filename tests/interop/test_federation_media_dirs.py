"""Media, the public room directory and spaces across our server and a real Synapse.

spec: server-server-api "Content Repository" (GET /_matrix/federation/v1/media/download|thumbnail,
multipart/mixed), "Public Room Directory", "Spaces" (GET /hierarchy/{roomId}); client-server-api
authenticated media (GET /_matrix/client/v1/media/...), GET /publicRooms `server`,
GET /v1/rooms/{roomId}/hierarchy.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from PIL import Image

from .server import RunningServer, http_json, register

DEADLINE_S = 30.0


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def png(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (20, 120, 220)).save(out, "PNG")
    return out.getvalue()


def http_bytes(method: str, url: str, token: str, data: bytes | None = None, ctype: str | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if ctype is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return bytes(resp.read())


def status_of(call: Callable[[], Any]) -> tuple[int, Any]:
    try:
        return 200, call()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def upload(server: RunningServer, token: str, data: bytes) -> str:
    url = f"{server.base_url}/_matrix/media/v3/upload?filename=blue.png"
    answer = json.loads(http_bytes("POST", url, token, data, "image/png"))
    return str(answer["content_uri"]).removeprefix("mxc://")


def fetch_through(server: RunningServer, token: str, mxc_path: str, image: bytes, what: str) -> None:
    """Download and thumbnail `mxc_path` (server/id) through `server`'s authenticated media API."""
    media = f"{server.base_url}/_matrix/client/v1/media"
    assert http_bytes("GET", f"{media}/download/{mxc_path}", token) == image, what
    thumb = http_bytes("GET", f"{media}/thumbnail/{mxc_path}?width=64&height=64&method=scale", token)
    got = Image.open(io.BytesIO(thumb))
    assert got.width < 640 and got.height < 320, (what, got.size)  # a smaller image: the server picks its size


def test_images_both_ways(synapse: RunningServer, ours: RunningServer) -> None:
    """An image uploaded on either server is downloaded and thumbnailed by the other's client."""
    _, syn_token = register(synapse, "media_syn")
    _, our_token = register(ours, "media_our")
    image = png(640, 320)
    started = time.monotonic()
    on_synapse = upload(synapse, syn_token, image)
    fetch_through(ours, our_token, on_synapse, image, "Synapse's image through our server")
    ours_took = time.monotonic() - started
    # a second time comes from our cache (Synapse is not asked: the same answer, however fast)
    assert http_bytes("GET", f"{ours.base_url}/_matrix/client/v1/media/download/{on_synapse}", our_token) == image
    on_ours = upload(ours, our_token, image)
    fetch_through(synapse, syn_token, on_ours, image, "our image through Synapse")
    status, answer = status_of(
        lambda: http_bytes(
            "GET", f"{ours.base_url}/_matrix/client/v1/media/download/{synapse.server_name}/nosuchmedia", our_token
        )
    )
    assert status == 404 and answer["errcode"] == "M_NOT_FOUND", answer
    print(f"\nremote image fetched and thumbnailed through our server in {ours_took * 1000:.0f} ms")


def create_room(server: RunningServer, token: str, **body: Any) -> str:
    return str(http_json("POST", f"{server.base_url}/_matrix/client/v3/createRoom", body, token)["room_id"])


def join(server: RunningServer, token: str, room_id: str, via: str) -> tuple[int, Any]:
    url = f"{server.base_url}/_matrix/client/v3/join/{q(room_id)}?via={q(via)}"
    return status_of(lambda: http_json("POST", url, {}, token))


def poll(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_synapse_public_rooms_listed_and_joined(synapse: RunningServer, ours: RunningServer) -> None:
    _, syn_token = register(synapse, "dir_syn")
    _, our_token = register(ours, "dir_our")
    room = create_room(synapse, syn_token, preset="public_chat", visibility="public", name="Synapse lobby")
    url = f"{ours.base_url}/_matrix/client/v3/publicRooms?server={q(synapse.server_name)}&limit=50"

    def listed() -> Any:
        return [r for r in http_json("GET", url, None, our_token)["chunk"] if r["room_id"] == room]

    entry = poll(listed, "Synapse's room in its directory, through ours")[0]
    assert entry["name"] == "Synapse lobby" and entry["num_joined_members"] == 1, entry
    answer = http_json(
        "POST",
        f"{ours.base_url}/_matrix/client/v3/publicRooms?server={q(synapse.server_name)}",
        {"filter": {"generic_search_term": "synapse lob"}},
        our_token,
    )
    assert room in [r["room_id"] for r in answer["chunk"]], answer
    status, answer = join(ours, our_token, room, synapse.server_name)
    assert status == 200 and answer["room_id"] == room, answer
    # and the other way: Synapse lists ours
    ours_room = create_room(ours, our_token, preset="public_chat", visibility="public", name="Our lobby")
    syn_url = f"{synapse.base_url}/_matrix/client/v3/publicRooms?server={q(ours.server_name)}"
    assert ours_room in [r["room_id"] for r in http_json("GET", syn_url, None, syn_token)["chunk"]]


def test_synapse_space_browsed_from_our_server(synapse: RunningServer, ours: RunningServer) -> None:
    """A space on Synapse with a child room on Synapse (we are not in it) and one on ours."""
    _, syn_token = register(synapse, "space_syn")
    _, our_token = register(ours, "space_our")
    space = create_room(
        synapse, syn_token, preset="public_chat", name="Synapse space", creation_content={"type": "m.space"}
    )
    remote_child = create_room(synapse, syn_token, preset="public_chat", name="Child on Synapse")
    local_child = create_room(ours, our_token, preset="public_chat", name="Child on ours")
    for child, via in ((remote_child, synapse.server_name), (local_child, ours.server_name)):
        path = f"/_matrix/client/v3/rooms/{q(space)}/state/m.space.child/{q(child)}"
        http_json("PUT", synapse.base_url + path, {"via": [via]}, syn_token)
    status, answer = join(ours, our_token, space, synapse.server_name)
    assert status == 200, answer
    url = f"{ours.base_url}/_matrix/client/v1/rooms/{q(space)}/hierarchy"

    def browsed() -> Any:
        rooms = http_json("GET", url, None, our_token)["rooms"]
        return rooms if len(rooms) == 3 else None

    rooms = poll(browsed, "the space's children in /hierarchy")
    by_id = {r["room_id"]: r for r in rooms}
    assert rooms[0]["room_id"] == space and len(rooms[0]["children_state"]) == 2, rooms[0]
    assert by_id[remote_child]["name"] == "Child on Synapse" and by_id[remote_child]["join_rule"] == "public"
    assert by_id[local_child]["name"] == "Child on ours"
    status, answer = join(ours, our_token, remote_child, synapse.server_name)
    assert status == 200, answer
