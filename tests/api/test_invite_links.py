"""Invite links (issue 13): invites as registration tokens with a purpose, the page at /invite/<token>,
its sign-up form, rooms joined on sign-up, users' quotas, and the refusals (used up, expired,
revoked, unknown, closed, a forged form, two people racing for the last use)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.server import HomeServer

from .auth_helpers import NO_LIMITS, register_with_token
from .conftest import Harness, User, make_config
from .rooms_helpers import create_room

INVITES = "/_matrix/client/unstable/org.homeserver.invites"
BASE = "https://chat.hs.test"
TOKEN_MODE: dict[str, Any] = {"registration": "token", "public_baseurl": BASE, **NO_LIMITS}
PHONE_UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/150 Mobile Safari/537.36"
IPHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def server(tmp_path: Path, clock: Clock | None = None, **overrides: Any) -> AsyncIterator[Harness]:
    hs = HomeServer(make_config(tmp_path, **{**TOKEN_MODE, **overrides}), clock=clock or Clock())
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        yield Harness(hs, client)
    finally:
        await client.close()


async def page(h: Harness, token: str, **headers: str) -> tuple[int, str]:
    resp = await h.client.get(f"/invite/{token}", headers=headers)
    assert resp.content_type == "text/html"
    return resp.status, await resp.text()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


async def sign_up(
    h: Harness, token: str, username: str, password: str = "a long passphrase", password2: str | None = None
) -> tuple[int, str]:
    status, html = await page(h, token)
    if status != 200:
        return status, html
    form = {"csrf": csrf_of(html), "username": username, "password": password, "password2": password2 or password}
    resp = await h.client.post(f"/invite/{token}", data=form)
    assert resp.content_type == "text/html"
    return resp.status, await resp.text()


def joined(h: Harness, user_id: str, room_id: str) -> bool:
    room = h.hs.queries.room(room_id)
    assert room is not None
    return h.hs.queries.is_joined(user_id, room)


async def admin(h: Harness) -> User:
    return await h.user("boss", admin=True)


# -- the page --------------------------------------------------------------------------------------


async def test_invite_page_says_who_invited_to_what(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        boss = await admin(h)
        await h.request("PUT", "profile/@boss:hs.test/displayname", boss, json={"displayname": "Bo <Boss>"})
        room_id = await create_room(h, boss, preset="public_chat", name="Friends & Family", room_alias_name="friends")
        status, made = await h.request(
            "POST", INVITES, boss, json={"uses": 3, "note": "see you <b>there</b>", "rooms": ["#friends:hs.test"]}
        )
        assert status == 200, made
        assert made["link"] == f"{BASE}/invite/{made['token']}" and made["rooms"] == ["#friends:hs.test"]
        status, html = await page(h, made["token"], **{"User-Agent": PHONE_UA})
        assert status == 200
        assert "Bo &lt;Boss&gt; invited you to chat on hs.test." in html  # escaped, never markup
        assert "Friends &amp; Family" in html and "see you &lt;b&gt;there&lt;/b&gt;" in html
        assert 'data-platform="android"' in html and "play.google.com" in html
        assert "<svg" in html and "<script" not in html and 'lang="en"' in html
        assert f'action="/invite/{made["token"]}"' in html
        assert room_id


async def test_page_headers_and_platforms(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        resp = await h.client.get(f"/invite/{invite['token']}", headers={"User-Agent": IPHONE_UA})
        html = await resp.text()
        assert "script-src" not in resp.headers["Content-Security-Policy"]  # default-src 'none' covers scripts
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Cache-Control"] == "no-store"
        assert 'data-platform="ios"' in html and "apps.apple.com" in html
        status, html = await page(h, invite["token"])
        assert status == 200 and 'data-platform="desktop"' in html and "flathub.org" in html


async def test_bad_invites_get_friendly_pages_with_the_right_status(tmp_path: Path) -> None:
    clock = Clock()
    async with server(tmp_path, clock) as h:
        used = await h.hs.invites.create(creator=None, as_admin=True)
        assert (await sign_up(h, used["token"], "first"))[0] == 200
        status, html = await page(h, used["token"])
        assert status == 410 and 'data-status="used"' in html and "used up" in html

        expiring = await h.hs.invites.create(creator=None, as_admin=True, expires_in_ms=60_000)
        assert (await page(h, expiring["token"]))[0] == 200
        clock.now += 61
        status, html = await page(h, expiring["token"])
        assert status == 410 and 'data-status="expired"' in html and "expired" in html

        revoked = await h.hs.invites.create(creator=None, as_admin=True)
        await h.hs.invites.revoke(revoked["token"], by=None, as_admin=True)
        status, html = await page(h, revoked["token"])
        assert status == 410 and 'data-status="revoked"' in html

        status, html = await page(h, "no-such-invite")
        assert status == 404 and 'data-status="unknown"' in html
        status, html = await page(h, "not%20a%20token")
        assert status == 404


async def test_closed_registration_closes_invites(tmp_path: Path) -> None:
    async with server(tmp_path, registration="closed") as h:
        await h.user("someone")  # past bootstrapping: only the first account's token worked before
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        status, html = await page(h, invite["token"])
        assert status == 403 and 'data-status="closed"' in html
        resp = await h.client.post(f"/invite/{invite['token']}", data={"username": "x"})
        assert resp.status == 403 and not h.hs.accounts.exists("@x:hs.test")


async def test_guessing_tokens_is_rate_limited(tmp_path: Path) -> None:
    async with server(tmp_path, rate_limits={"enabled": True}) as h:
        statuses = [(await page(h, f"guess{i}"))[0] for i in range(8)]
        assert statuses[:5] == [404] * 5 and 429 in statuses[5:]


# -- signing up on the page ----------------------------------------------------------------------


async def test_sign_up_on_the_page_joins_the_rooms_and_says_how_to_log_in(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        boss = await admin(h)
        public = await create_room(h, boss, preset="public_chat", room_alias_name="lobby")
        private = await create_room(h, boss, preset="private_chat", name="Secret")
        invite = await h.hs.invites.create(
            creator=boss.user_id, as_admin=True, rooms=["#lobby:hs.test", private], uses=2
        )
        status, html = await sign_up(h, invite["token"], "Newbie")
        assert status == 200, html
        assert "@newbie:hs.test" in html and 'id="homeserver-url">https://chat.hs.test<' in html
        assert "mobile.element.io/?account_provider=hs.test" in html
        assert joined(h, "@newbie:hs.test", public)
        assert joined(h, "@newbie:hs.test", private)  # invite-only: the invite's maker invited them first
        # the password works for a normal login
        status, login = await h.request(
            "POST",
            "login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "newbie"},
                "password": "a long passphrase",
            },
        )
        assert status == 200 and login["user_id"] == "@newbie:hs.test"
        row = next(r for r in h.hs.invites.list() if r["token"] == invite["token"])
        assert row["completed"] == 1 and row["status"] == "valid"


async def test_uia_registration_with_an_invite_joins_its_rooms(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        boss = await admin(h)
        public = await create_room(h, boss, preset="public_chat", room_alias_name="lobby")
        invite = await h.hs.invites.create(creator=None, as_admin=True, rooms=["#lobby:hs.test"])
        status, body = await register_with_token(h, "viaapp", invite["token"])
        assert status == 200, body
        assert joined(h, "@viaapp:hs.test", public)


async def test_form_mistakes_are_shown_and_create_nothing(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        await h.user("taken")
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        token = invite["token"]
        status, html = await sign_up(h, token, "ann", "a long passphrase", "another passphrase")
        assert status == 400 and "not the same" in html and 'role="alert"' in html
        status, html = await sign_up(h, token, "ann", "short")
        assert status == 400 and "at least 8" in html
        status, html = await sign_up(h, token, "taken")
        assert status == 409 and "taken" in html and 'value="taken"' in html
        status, html = await sign_up(h, token, "bad name!")
        assert status == 400 and "cannot be used" in html
        # a forged form (no CSRF cookie matching the field) is refused
        h.client.session.cookie_jar.clear()
        form = {"csrf": "forged", "username": "mallory", "password": "a long passphrase"}
        resp = await h.client.post(f"/invite/{token}", data={**form, "password2": form["password"]})
        assert resp.status == 400 and "expired" in await resp.text()
        assert not any(h.hs.accounts.exists(f"@{n}:hs.test") for n in ("ann", "mallory", "bad name!"))
        row = next(r for r in h.hs.invites.list() if r["token"] == token)
        assert row["completed"] == 0 and row["pending"] == 0


async def test_two_people_racing_for_the_last_use_one_wins(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        invite = await h.hs.invites.create(creator=None, as_admin=True, uses=1)
        names = [f"racer{i}" for i in range(6)]
        results = await asyncio.gather(
            *(h.hs.registration.register_with_invite(invite["token"], n, "a long passphrase") for n in names),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, str)]
        assert len(winners) == 1
        assert all(getattr(r, "errcode", None) == "M_FORBIDDEN" for r in results if not isinstance(r, str))
        assert [n for n in names if h.hs.accounts.exists(f"@{n}:hs.test")] == [winners[0].split(":")[0][1:]]
        row = next(r for r in h.hs.invites.list() if r["token"] == invite["token"])
        assert row["completed"] == 1 and row["status"] == "used"


async def test_page_and_app_racing_for_the_last_use(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        invite = await h.hs.invites.create(creator=None, as_admin=True, uses=1)
        page_status, app = await asyncio.gather(
            sign_up(h, invite["token"], "onpage"), register_with_token(h, "inapp", invite["token"])
        )
        made = [n for n in ("onpage", "inapp") if h.hs.accounts.exists(f"@{n}:hs.test")]
        assert len(made) == 1, (page_status[0], app)


# -- making, listing and revoking ------------------------------------------------------------------


async def test_users_may_not_invite_unless_the_config_allows(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        user = await h.user("plain")
        status, body = await h.request("POST", INVITES, user, json={})
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"
        status, body = await h.request("POST", INVITES, json={})
        assert status == 401


async def test_user_invites_within_their_quota(tmp_path: Path) -> None:
    settings = {"users_may_invite": True, "user_quota": 2, "user_max_uses": 3, "default_expiry_days": 2}
    async with server(tmp_path, invites=settings) as h:
        boss, ann, bob = await admin(h), await h.user("ann"), await h.user("bob")
        boss_room = await create_room(h, boss, preset="public_chat")
        status, body = await h.request("POST", INVITES, ann, json={"uses": 4})
        assert status == 400 and "at most 3 uses" in body["error"]
        status, body = await h.request("POST", INVITES, ann, json={"uses": None})
        assert status == 400
        status, body = await h.request("POST", INVITES, ann, json={"expires_in_ms": 3 * 86_400_000})
        assert status == 400 and "2 days" in body["error"]
        status, body = await h.request("POST", INVITES, ann, json={"rooms": [boss_room]})
        assert status == 403 and "not in" in body["error"]
        status, body = await h.request("POST", INVITES, ann, json={"rooms": ["#nowhere:hs.test"]})
        assert status == 400
        status, first = await h.request("POST", INVITES, ann, json={"note": "for Carol"})
        assert status == 200 and first["creator"] == "@ann:hs.test" and first["uses_allowed"] == 1
        assert first["expiry_time"] == int(h.hs.clock() * 1000) + 2 * 86_400_000
        assert (await h.request("POST", INVITES, ann, json={}))[0] == 200
        status, body = await h.request("POST", INVITES, ann, json={})
        assert status == 403 and "revoke one" in body["error"]
        # listing shows only one's own; revoking another's invite looks like it does not exist
        status, listed = await h.request("GET", INVITES, ann)
        assert status == 200 and len(listed["invites"]) == 2
        assert (await h.request("GET", INVITES, bob))[1] == {"invites": []}
        status, _ = await h.request("DELETE", f"{INVITES}/{first['token']}", bob)
        assert status == 404
        status, revoked = await h.request("DELETE", f"{INVITES}/{first['token']}", ann)
        assert status == 200 and revoked["status"] == "revoked"
        assert (await h.request("POST", INVITES, ann, json={}))[0] == 200  # a slot again
        # the page names the user who invited
        second = next(r["token"] for r in listed["invites"] if r["token"] != first["token"])
        status, html = await page(h, second)
        assert status == 200 and "ann invited you to chat on hs.test" in html
        # admins see everyone's with ?all=true and are not limited
        status, everyone = await h.request("GET", f"{INVITES}?all=true", boss)
        assert status == 200 and len(everyone["invites"]) == 3
        assert (await h.request("POST", INVITES, boss, json={"uses": None}))[0] == 200


async def test_revoked_invite_refuses_a_registration_already_under_way(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        status, first = await h.request("POST", "register", json={"username": "late", "password": "p" * 10})
        auth = {"type": "m.login.registration_token", "token": invite["token"], "session": first["session"]}
        status, body = await h.request("POST", "register", json={"auth": auth})
        assert status == 401 and body["completed"] == ["m.login.registration_token"]
        await h.hs.invites.revoke(invite["token"], by=None, as_admin=True)
        status, body = await h.request(
            "POST", "register", json={"auth": {"type": "m.login.dummy", "session": first["session"]}}
        )
        assert status == 403 and not h.hs.accounts.exists("@late:hs.test")


async def test_admin_api_new_token_takes_rooms_and_keeps_synapse_shape(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        boss = await admin(h)
        await create_room(h, boss, preset="public_chat", room_alias_name="lobby")
        path = "/_synapse/admin/v1/registration_tokens/new"
        status, body = await h.request("POST", path, boss, json={"rooms": ["#lobby:hs.test"], "note": "hi"})
        assert status == 200 and set(body) == {"token", "uses_allowed", "pending", "completed", "expiry_time"}
        row = next(r for r in h.hs.invites.list() if r["token"] == body["token"])
        assert row["rooms"] == ["#lobby:hs.test"] and row["note"] == "hi" and row["creator"] == boss.user_id
        status, body = await h.request("POST", path, boss, json={"rooms": ["#missing:hs.test"]})
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


@pytest.mark.parametrize("bad", [{"uses": 0}, {"expires_in_ms": -5}, {"note": "x" * 501}, {"rooms": ["r"] * 21}])
async def test_bad_invite_bodies(tmp_path: Path, bad: dict[str, Any]) -> None:
    async with server(tmp_path) as h:
        boss = await admin(h)
        status, body = await h.request("POST", INVITES, boss, json=bad)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", body


async def test_the_form_takes_only_forms(tmp_path: Path) -> None:
    async with server(tmp_path) as h:
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        resp = await h.client.post(f"/invite/{invite['token']}", json={"username": "json", "password": "x" * 9})
        assert resp.status == 415 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"
        big = {"csrf": "x", "username": "u" * 20_000, "password": "p", "password2": "p"}
        resp = await h.client.post(f"/invite/{invite['token']}", data=big)
        assert resp.status == 413 and not h.hs.accounts.exists("@" + "u" * 20_000 + ":hs.test")
