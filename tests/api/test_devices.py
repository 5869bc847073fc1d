"""GET /devices, GET/PUT/DELETE /devices/{deviceId}, POST /delete_devices."""

from __future__ import annotations

import pytest

from .auth_helpers import NO_LIMITS, PASSWORD, as_user, bearer, login, password_auth, register, with_password
from .conftest import Harness


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_list_and_get(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    _, body = await login(harness, "alice", device_id="LAPTOP", initial_device_display_name="Laptop")
    alice = as_user(body)
    status, listed = await harness.request("GET", "devices", alice)
    assert status == 200
    by_id = {d["device_id"]: d for d in listed["devices"]}
    assert by_id["LAPTOP"]["display_name"] == "Laptop"
    assert isinstance(by_id["LAPTOP"]["last_seen_ts"], int)
    assert len(by_id) == 2  # the harness's own device has no name, so none is shown
    unnamed = next(d for d in listed["devices"] if d["device_id"] != "LAPTOP")
    assert "display_name" not in unnamed
    status, one = await harness.request("GET", "devices/LAPTOP", alice)
    assert status == 200 and one == by_id["LAPTOP"]
    status, err = await harness.request("GET", "devices/NOPE", alice)
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    # other users' devices are invisible
    bob = await harness.user("bob")
    status, err = await harness.request("GET", "devices/LAPTOP", bob)
    assert status == 404
    assert (await harness.request("GET", "devices"))[0] == 401


async def test_rename(harness: Harness) -> None:
    alice = await harness.user("alice")
    path = f"devices/{alice.device_id}"
    status, body = await harness.request("PUT", path, alice, json={"display_name": "Work"})
    assert status == 200 and body == {}
    assert (await harness.request("GET", path, alice))[1]["display_name"] == "Work"
    status, body = await harness.request("PUT", path, alice, json={})
    assert status == 200
    assert (await harness.request("GET", path, alice))[1]["display_name"] == "Work"  # omitted: unchanged
    status, body = await harness.request("PUT", "devices/NEWDEVICE", alice, json={"display_name": "x"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"  # only appservices create devices here
    status, body = await harness.request("PUT", path, alice, json={"display_name": 3})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_delete_device_needs_the_password(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    _, other = await login(harness, "alice", device_id="OLDPHONE")
    status, first = await harness.request("DELETE", "devices/OLDPHONE", alice)  # no body at all
    assert status == 401 and first["flows"] == [{"stages": ["m.login.password"]}] and first["session"]
    auth = password_auth(alice.user_id, "wrong", first["session"])
    status, body = await harness.request("DELETE", "devices/OLDPHONE", alice, json={"auth": auth})
    assert status == 401 and body["errcode"] == "M_FORBIDDEN" and body["session"] == first["session"]
    assert (await harness.request("GET", "account/whoami", headers=bearer(other["access_token"])))[0] == 200
    auth = password_auth(alice.user_id, PASSWORD, first["session"])
    status, body = await harness.request("DELETE", "devices/OLDPHONE", alice, json={"auth": auth})
    assert status == 200 and body == {}
    assert (await harness.request("GET", "account/whoami", headers=bearer(other["access_token"])))[0] == 401
    assert (await harness.request("GET", "devices/OLDPHONE", alice))[0] == 404
    # spec: deleting a device that is gone already is fine
    status, body = await with_password(harness, "DELETE", "devices/OLDPHONE", alice, {})
    assert status == 200


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_delete_devices(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    tokens = {}
    for device in ("A", "B", "C"):
        _, body = await login(harness, "alice", device_id=device)
        tokens[device] = body["access_token"]
    status, body = await with_password(harness, "POST", "delete_devices", alice, {"devices": ["A", "B", "NOPE"]})
    assert status == 200 and body == {}
    remaining = {d["device_id"] for d in (await harness.request("GET", "devices", alice))[1]["devices"]}
    assert remaining == {alice.device_id, "C"}
    assert (await harness.request("GET", "account/whoami", headers=bearer(tokens["A"])))[0] == 401
    assert (await harness.request("GET", "account/whoami", headers=bearer(tokens["C"])))[0] == 200
    for body, errcode in [({}, "M_MISSING_PARAM"), ({"devices": "A"}, "M_BAD_JSON"), ({"devices": [1]}, "M_BAD_JSON")]:
        status, answer = await harness.request("POST", "delete_devices", alice, json=body)
        assert status == 400 and answer["errcode"] == errcode


async def test_deleting_the_current_device_logs_out(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    status, _ = await with_password(harness, "DELETE", f"devices/{alice.device_id}", alice, {})
    assert status == 200
    assert (await harness.request("GET", "account/whoami", alice))[0] == 401


async def test_guests_cannot_delete_devices(harness: Harness) -> None:
    status, guest = await harness.request("POST", "register?kind=guest", json={})
    assert status == 200
    g = as_user(guest)
    status, body = await harness.request("DELETE", f"devices/{g.device_id}", g)
    assert status == 403 and body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    status, body = await harness.request("POST", "delete_devices", g, json={"devices": []})
    assert status == 403 and body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    # renaming is allowed for guests
    assert (await harness.request("PUT", f"devices/{g.device_id}", g, json={"display_name": "x"}))[0] == 200


async def test_deleted_devices_reach_listeners(harness: Harness) -> None:
    seen: list[tuple[str, list[str]]] = []
    harness.hs.accounts.devices_deleted_listeners.append(lambda user, devices, batch: seen.append((user, devices)))
    alice = await harness.user("alice", password=PASSWORD)
    status, _ = await harness.request("POST", "logout", alice)
    assert status == 200
    assert seen == [("@alice:hs.test", [alice.device_id])]


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_device_names_are_capped_wherever_they_are_set(harness: Harness) -> None:
    # a device's name reaches everyone who shares a room (keys/query): 100 characters at most, at
    # login and registration as on PUT /devices
    await harness.user("alice", password=PASSWORD)
    status, body = await login(harness, "alice", initial_device_display_name="x" * 101)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await login(harness, "alice", device_id="OK", initial_device_display_name="x" * 100)
    assert status == 200
    status, body = await register(harness, "bob", initial_device_display_name="y" * 101)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    assert (await register(harness, "bob"))[0] == 200  # nothing of the refused attempt was kept
    carol = await harness.user("carol")
    status, body = await harness.request("PUT", f"devices/{carol.device_id}", carol, json={"display_name": "z" * 101})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
