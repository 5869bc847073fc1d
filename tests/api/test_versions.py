"""GET /_matrix/client/versions as clients read it (spec: "API Versions").

Element Web sets up cross-signing only with `unstable_features["org.matrix.e2e_cross_signing"]`,
and sends `filter.room_types` to /publicRooms only with `org.matrix.msc3827.stable`; matrix-js-sdk
and ruma choose authenticated media (v1.11), threads (v1.4), room summaries (v1.15) and the stable
`use_state_after` (v1.16) by version.
"""

from __future__ import annotations

import re

from .conftest import Harness


async def test_versions_list_every_served_version(harness: Harness) -> None:
    status, body = await harness.request("GET", "/_matrix/client/versions")
    assert status == 200
    versions = body["versions"]
    # v1.1 … v1.19 (the spec this server implements), nothing past it, each once
    assert [v for v in versions if v.startswith("v1.")] == [f"v1.{n}" for n in range(1, 20)]
    assert all(re.fullmatch(r"r0\.\d+\.\d+|v1\.\d+", v) for v in versions)
    for needed in ("v1.4", "v1.6", "v1.11", "v1.15", "v1.16"):  # versions clients branch on
        assert needed in versions


async def test_unstable_features_element_reads(harness: Harness) -> None:
    alice = await harness.user("alice")
    for user in (None, alice):  # the same answer with and without a token
        status, body = await harness.request("GET", "/_matrix/client/versions", user)
        assert status == 200
        features = body["unstable_features"]
        assert features["org.matrix.e2e_cross_signing"] is True
        assert features["org.matrix.msc3827.stable"] is True
        assert features["org.matrix.simplified_msc3575"] is True  # Element X needs it (sliding sync)
        assert all(v is True for v in features.values())
        # not built here: advertising them would send clients down paths that fail
        for absent in ("org.matrix.msc3575", "org.matrix.msc2965"):
            assert absent not in features


async def test_room_types_filter_behind_the_msc3827_flag(harness: Harness) -> None:
    # what Element does once it sees org.matrix.msc3827.stable: filter the directory by room type
    alice = await harness.user("alice")
    status, body = await harness.request(
        "POST",
        "createRoom",
        alice,
        json={"visibility": "public", "preset": "public_chat", "creation_content": {"type": "m.space"}},
    )
    assert status == 200, body
    space = body["room_id"]
    status, body = await harness.request("POST", "createRoom", alice, json={"visibility": "public"})
    assert status == 200, body
    room = body["room_id"]
    status, body = await harness.request("POST", "publicRooms", alice, json={"filter": {"room_types": ["m.space"]}})
    assert status == 200 and [r["room_id"] for r in body["chunk"]] == [space]
    status, body = await harness.request("POST", "publicRooms", alice, json={"filter": {"room_types": [None]}})
    assert status == 200 and [r["room_id"] for r in body["chunk"]] == [room]
