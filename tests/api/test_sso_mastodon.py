"""Log in with Mastodon, against a double of Mastodon's OAuth and accounts API written from its
documentation (tests/e2e/mastodon_double.py), in-process: the app registered once on first use and
again when the server forgets it, the authorization code flow with PKCE (or without, on a server
older than 4.3), the account keyed by its id (a rename keeps the Matrix account), the avatar
imported, and every refusal the issue names: forged or replayed state, access_denied, a server that
fails (500, malformed JSON, too slow), bots, suspended, limited, unconfirmed and young accounts, each
registration policy, an existing localpart. A refusal creates nothing."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from html import unescape as html_unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from homeserver.auth import mastodon
from homeserver.config import Config, load_config
from homeserver.server import HomeServer
from tests.e2e.mastodon_double import MastodonDouble

from .auth_helpers import NO_LIMITS
from .conftest import Harness, make_config

CLIENT_URL = "https://client.example/after-login"
REDIRECT = "/_matrix/client/v3/login/sso/redirect"


@asynccontextmanager
async def mastodon_server(
    tmp_path: Path, *, double: MastodonDouble | None = None, top: dict[str, Any] | None = None, **provider: Any
) -> AsyncIterator[tuple[Harness, MastodonDouble]]:
    fake = double or MastodonDouble()
    upstream = TestServer(fake.app(), host="127.0.0.1")
    await upstream.start_server()
    fake.base = str(upstream.make_url("")).rstrip("/")
    settings = {"url": fake.base, "id": "masto", "name": "My Mastodon", **provider}
    config = make_config(
        tmp_path,
        public_baseurl="https://hs.example",
        sso={"mastodon": [settings], "client_hosts": ["trusted.example"]},
        **{**NO_LIMITS, **(top or {})},
    )
    hs = HomeServer(config)
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        yield Harness(hs, client), fake
    finally:
        await client.close()
        await upstream.close()


async def begin(h: Harness, redirect_url: str = CLIENT_URL, query: str = "") -> str:
    resp = await h.client.get(
        f"{REDIRECT}/masto?redirectUrl={quote(redirect_url, safe='')}{query}", allow_redirects=False
    )
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


async def at_mastodon(auth_url: str, username: str, decision: str = "allow") -> str:
    """The browser at the Mastodon server: its authorize page, then a press on Authorize (or Deny).
    Returns where Mastodon sends the browser back to (our callback's path and query)."""
    async with aiohttp.ClientSession() as browser:
        async with browser.get(auth_url) as page:
            text = await page.text()
            assert page.status == 200, text
            assert "Authorize" in text and "Matrix homeserver" in text
        form = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
        form.update(username=username, password="x", decision=decision)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(auth_url))
        async with browser.post(f"{origin}/oauth/authorize", data=form, allow_redirects=False) as back:
            assert back.status == 302, await back.text()
            location = urlsplit(back.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == "https://hs.example"
    return f"{location.path}?{location.query}"


async def callback(h: Harness, back: str) -> tuple[int, str]:
    resp = await h.client.get(back, allow_redirects=False)
    return resp.status, await resp.text()


def login_token_from(page: str) -> str:
    found = re.search(r'href="https://client\.example/after-login\?loginToken=([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


async def token_login(h: Harness, token: str) -> tuple[int, Any]:
    return await h.request("POST", "login", json={"type": "m.login.token", "token": token})


async def sign_in(h: Harness, username: str, query: str = "") -> tuple[int, str]:
    """A login as `username` at the double, up to our callback's answer (status, page)."""
    return await callback(h, await at_mastodon(await begin(h, query=query), username))


async def full_login(h: Harness, username: str) -> str:
    status, page = await sign_in(h, username)
    assert status == 200, page
    status, body = await token_login(h, login_token_from(page))
    assert status == 200, body
    return str(body["user_id"])


async def test_config_by_url_alone() -> None:
    config = Config.model_validate({"sso": {"mastodon": [{"url": "https://my.social/"}]}})
    (provider,) = config.sso.mastodon
    assert (provider.url, provider.id, provider.name, provider.registration) == (
        "https://my.social",
        "my.social",
        "my.social",
        "open",
    )
    for bad in ("http://my.social", "https://my.social/@alice", "my.social"):
        with pytest.raises(ValueError):
            Config.model_validate({"sso": {"mastodon": [{"url": bad}]}})
    with pytest.raises(ValueError, match="unique"):
        Config.model_validate(
            {"sso": {"mastodon": [{"url": "https://a.example", "id": "x"}, {"url": "https://b.example", "id": "x"}]}}
        )


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Log in with Mastodon", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "homeserver.toml"
    path.write_text(example)
    config = load_config(path, environ={})
    assert config.registration == "token"
    assert [(m.url, m.id, m.registration) for m in config.sso.mastodon] == [("https://my.social", "my.social", "open")]


async def test_login_flows_list_the_mastodon_server(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path, icon="mxc://hs.example/mastodon") as (h, _):
        status, body = await h.request("GET", "login")
        assert status == 200
        sso = [f for f in body["flows"] if f["type"] == "m.login.sso"]
        assert sso == [
            {
                "type": "m.login.sso",
                "identity_providers": [{"id": "masto", "name": "My Mastodon", "icon": "mxc://hs.example/mastodon"}],
                "oauth_aware_preferred": True,  # the OAuth 2.0 API is on by default
            }
        ]


async def test_the_whole_hand_off_then_the_same_account_after_a_rename(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, fake):
        auth_url = await begin(h)
        params = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
        assert auth_url.startswith(f"{fake.base}/oauth/authorize?")
        assert params["redirect_uri"] == "https://hs.example/_homeserver/sso/callback/masto"
        assert params["client_id"] in fake.apps and params["scope"] == "profile"
        assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
        assert "nonce" not in params  # Mastodon is not OpenID Connect
        fake.account("alice", display_name="Alice Liddell")
        status, page = await callback(h, await at_mastodon(auth_url, "alice"))
        assert status == 200 and "Continue to client.example?" in page and "@alice:hs.test" in page
        status, body = await token_login(h, login_token_from(page))
        assert status == 200 and body["user_id"] == "@alice:hs.test"
        profile = h.hs.profiles.get_profile("@alice:hs.test")
        assert profile["displayname"] == "Alice Liddell"
        assert profile["avatar_url"].startswith("mxc://hs.test/")
        media_id = profile["avatar_url"].rsplit("/", 1)[1]
        resp = await h.client.get(
            f"/_matrix/client/v1/media/download/hs.test/{media_id}",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
        assert resp.status == 200 and resp.content_type == "image/png" and (await resp.read()).startswith(b"\x89PNG")
        # the access token at Mastodon was only for reading the account: revoked
        deadline = time.monotonic() + 5
        while not fake.revoked and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(fake.revoked) == 1 and not fake.tokens
        # again: the same account; renamed at Mastodon: the same account (keyed by the account id)
        assert await full_login(h, "alice") == "@alice:hs.test"
        fake.rename("alice", "alicia")
        assert await full_login(h, "alicia") == "@alice:hs.test"
        assert fake.registrations == 1  # the app was registered once


async def test_an_existing_localpart_gets_a_free_one_never_that_account(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, fake):
        await h.user("bob")
        fake.account("Bob", avatar=False)
        assert await full_login(h, "Bob") == "@bob2:hs.test"
        assert "avatar_url" not in h.hs.profiles.get_profile("@bob2:hs.test")  # Mastodon's missing.png


async def test_linking_an_existing_user_when_allowed(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path, registration="closed", allow_existing_users=True) as (h, _fake):
        await h.user("carol")
        assert await full_login(h, "carol") == "@carol:hs.test"
        status, page = await sign_in(h, "dan")
        assert status == 403 and 'data-reason="no_account"' in page
        assert not h.hs.accounts.exists("@dan:hs.test")


async def test_concurrent_first_logins_register_the_app_once(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, fake):
        fake.register_delay_s = 0.2
        urls = await asyncio.gather(*(begin(h) for _ in range(5)))
        assert fake.registrations == 1
        client_ids = {parse_qs(urlsplit(u).query)["client_id"][0] for u in urls}
        assert len(client_ids) == 1
        stored = h.hs.db.external_ids.client("masto")
        assert stored is not None and stored["client_id"] in client_ids and stored["url"] == fake.base
        # kept in the store: a provider made afresh (as after a restart) does not register again
        again = mastodon.MastodonProvider(h.hs.config.sso.mastodon[0], h.hs.db.external_ids)
        assert (await again.client(stored["redirect_uri"]))["client_id"] == stored["client_id"]
        assert fake.registrations == 1


async def test_an_app_the_server_forgot_is_registered_again(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, fake):
        assert await full_login(h, "fay") == "@fay:hs.test"
        fake.forget_apps()
        # mid-login: the token endpoint refuses the client; the page says so, the next login works
        auth_url = await begin(h)
        back = await at_mastodon_unknown_client(h, fake, auth_url, "fay")
        status, page = await callback(h, back)
        assert status == 502 and 'data-reason="provider"' in page
        assert h.hs.db.external_ids.client("masto") is None
        assert await full_login(h, "fay") == "@fay:hs.test"
        assert fake.registrations == 2
        # the daily check of a stored app finds it gone before sending anyone there
        fake.forget_apps()
        provider = h.hs.sso.providers["masto"]
        assert isinstance(provider, mastodon.MastodonProvider)
        provider.clock = lambda: time.time() + 2 * 86_400
        assert await full_login(h, "fay") == "@fay:hs.test"
        assert fake.registrations == 3


async def at_mastodon_unknown_client(h: Harness, fake: MastodonDouble, auth_url: str, username: str) -> str:
    """A code granted just before the app was removed (its authorize request no longer validates)."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
    code = fake.grant(params, username)
    state = params["state"]
    return f"/_homeserver/sso/callback/masto?code={code}&state={state}"


async def test_a_server_older_than_4_3_without_metadata(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path, double=MastodonDouble(metadata=False)) as (h, fake):
        auth_url = await begin(h)
        params = parse_qs(urlsplit(auth_url).query)
        assert params["scope"] == ["read:accounts"] and "code_challenge" not in params
        assert fake.apps[params["client_id"][0]].scopes == ["read:accounts"]
        status, page = await callback(h, await at_mastodon(auth_url, "greg"))
        assert status == 200
        assert (await token_login(h, login_token_from(page)))[1]["user_id"] == "@greg:hs.test"


async def test_pkce_is_enforced_by_the_double_and_used_by_us(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, fake):
        first, second = await begin(h), await begin(h)
        params = {k: v[0] for k, v in parse_qs(urlsplit(second).query).items()}
        params["code_challenge"] = parse_qs(urlsplit(first).query)["code_challenge"][0]
        code = fake.grant(params, "hal")
        status, page = await callback(h, f"/_homeserver/sso/callback/masto?code={code}&state={params['state']}")
        assert status == 502 and 'data-reason="provider"' in page
        assert not h.hs.accounts.exists("@hal:hs.test")


async def test_forged_replayed_and_cookieless_state(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, _fake):
        back = await at_mastodon(await begin(h), "ivy")
        code = parse_qs(urlsplit(back).query)["code"][0]
        status, page = await callback(h, f"/_homeserver/sso/callback/masto?code={code}&state=forged")
        assert status == 400 and 'data-reason="state"' in page
        # a fresh attempt, its state replayed after use
        back = await at_mastodon(await begin(h), "ivy")
        assert (await callback(h, back))[0] == 200
        status, page = await callback(h, back)
        assert status == 400 and 'data-reason="state"' in page
        # the state of an attempt, brought back to another provider's callback
        back = await at_mastodon(await begin(h), "ivy")
        status, page = await callback(h, back.replace("/callback/masto", "/callback/other"))
        assert status == 400 and 'data-reason="state"' in page
        # the state without this browser's cookie
        back = await at_mastodon(await begin(h), "ivy")
        h.client.session.cookie_jar.clear()
        status, page = await callback(h, back)
        assert status == 400 and 'data-reason="state"' in page


async def test_provider_errors_are_clear_pages_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mastodon, "HTTP_TIMEOUT_S", 0.5)
    async with mastodon_server(tmp_path) as (h, fake):
        status, page = await callback(h, await at_mastodon(await begin(h), "jo", decision="deny"))
        assert status == 403 and 'data-reason="denied"' in page and "cancelled" in page
        for mode in ("500", "bad_json", "slow"):
            fake.mode, fake.slow_s = mode, 3
            started = time.monotonic()
            status, page = await sign_in(h, "jo")
            assert status == 502 and 'data-reason="provider"' in page, mode
            assert "did not answer as expected" in page
            assert time.monotonic() - started < 2.5, mode  # our deadline, not the server's pace
        assert not h.hs.accounts.exists("@jo:hs.test")
        assert h.hs.db.external_ids.get("masto", fake.account("jo").id) is None


async def test_userinfo_is_a_second_opinion(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, fake):
        fake.userinfo_status = 403  # unreadable: verify_credentials decides
        assert await full_login(h, "uma") == "@uma:hs.test"
        fake.userinfo_status, fake.userinfo_name = 200, "somebody-else"
        status, page = await sign_in(h, "uma")
        assert status == 502 and 'data-reason="provider"' in page


async def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, _fake):
        h.hs.sso.providers["masto"].url = "http://127.0.0.1:9"  # type: ignore[attr-defined]
        status, body = await h.request("GET", f"login/sso/redirect/masto?redirectUrl={CLIENT_URL}")
        assert status == 502 and body["errcode"] == "M_UNKNOWN" and "could not be reached" in body["error"]


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"bot": True}, "account_bot"),
        ({"suspended": True}, "account_restricted"),
        ({"limited": True}, "account_restricted"),
        ({"confirmed": False}, "account_restricted"),
        ({"approved": False}, "account_restricted"),
        ({"created_at": datetime.now(UTC) - timedelta(days=2)}, "account_young"),
    ],
)
async def test_rules_refuse_accounts(tmp_path: Path, attrs: dict[str, Any], reason: str) -> None:
    async with mastodon_server(tmp_path, min_account_age_days=7) as (h, fake):
        account = fake.account("kim", **attrs)
        status, page = await sign_in(h, "kim")
        assert status == 403 and f'data-reason="{reason}"' in page, page
        assert not h.hs.accounts.exists("@kim:hs.test")
        assert h.hs.db.external_ids.get("masto", account.id) is None


async def test_a_refusal_during_an_oauth_sign_in_offers_its_sign_in_page_again(tmp_path: Path) -> None:
    # the OAuth pages hand their sign-ins to the provider with this redirectUrl (homeserver/api/oauth_pages.py)
    consent = "/_homeserver/oauth/consent?req=R1"
    oauth_return = f"https://hs.example/_homeserver/oauth/sso?next={quote(consent, safe='')}"
    async with mastodon_server(tmp_path) as (h, fake):
        fake.account("robot", bot=True)
        status, page = await callback(h, await at_mastodon(await begin(h, oauth_return), "robot"))
        assert status == 403 and 'data-reason="account_bot"' in page
        back = re.search(r'id="back" href="([^"]+)"', page)
        assert (
            back is not None
            and html_unescape(back.group(1)) == f"/_homeserver/oauth/login?next={quote(consent, safe='')}"
        )
        resp = await h.client.get(html_unescape(back.group(1)))
        assert resp.status == 200 and "My Mastodon" in await resp.text()  # the sign-in page, its button
        status, page = await callback(h, await at_mastodon(await begin(h), "robot"))
        assert status == 403 and 'data-reason="account_bot"' in page and 'id="back"' not in page  # an app's login


async def test_rules_can_let_bots_and_limited_accounts_in(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path, allow_bots=True, allow_limited=True) as (h, fake):
        fake.account("robot", bot=True)
        fake.account("quiet", limited=True)
        assert await full_login(h, "robot") == "@robot:hs.test"
        assert await full_login(h, "quiet") == "@quiet:hs.test"


async def test_rules_apply_to_a_linked_account_too(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path) as (h, fake):
        assert await full_login(h, "lee") == "@lee:hs.test"
        fake.account("lee", suspended=True)
        status, page = await sign_in(h, "lee")
        assert status == 403 and 'data-reason="account_restricted"' in page


async def test_closed_provider_makes_no_accounts(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path, registration="closed") as (h, _fake):
        status, page = await sign_in(h, "max")
        assert status == 403 and 'data-reason="no_account"' in page
        assert not h.hs.accounts.exists("@max:hs.test")
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        # an invite does not open a closed provider, and its page offers no button for it
        status, page = await sign_in(h, "max", query=f"&org.homeserver.invite={invite['token']}")
        assert status == 403 and not h.hs.accounts.exists("@max:hs.test")
        resp = await h.client.get(f"/invite/{invite['token']}")
        assert "My Mastodon" not in await resp.text()


async def test_invite_only_provider_through_the_invite_page(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path, registration="invite") as (h, _fake):
        status, page = await sign_in(h, "nia")
        assert status == 403 and 'data-reason="invite_needed"' in page
        assert not h.hs.accounts.exists("@nia:hs.test")
        boss = await h.user("boss", admin=True)
        status, room = await h.request("POST", "createRoom", boss, json={"preset": "public_chat"})
        invite = await h.hs.invites.create(creator=None, as_admin=True, rooms=[room["room_id"]])
        resp = await h.client.get(f"/invite/{invite['token']}")
        found = re.search(r'<a class="button" href="([^"]+)">My Mastodon</a>', html_unescape(await resp.text()))
        assert found is not None
        resp = await h.client.get(found.group(1), allow_redirects=False)
        assert resp.status == 302
        status, page = await callback(h, await at_mastodon(resp.headers["Location"], "nia"))
        assert status == 200 and "Welcome, @nia:hs.test!" in page
        assert h.hs.queries.is_joined("@nia:hs.test", h.hs.queries.room(room["room_id"]) or 0)
        row = next(r for r in h.hs.invites.list() if r["token"] == invite["token"])
        assert row["status"] == "used"
        # a used-up invite lets nobody else in
        status, page = await sign_in(h, "oli", query=f"&org.homeserver.invite={invite['token']}")
        assert status == 403 and 'data-reason="invite_needed"' in page
        assert not h.hs.accounts.exists("@oli:hs.test")


async def test_the_typical_setup_mastodon_users_in_everyone_else_with_an_invite(tmp_path: Path) -> None:
    # registration = "token" (the default) for passwords; [[sso.mastodon]] url = … (open by default)
    async with mastodon_server(tmp_path, top={"registration": "token"}) as (h, _fake):
        assert await full_login(h, "pia") == "@pia:hs.test"
        status, body = await h.request("POST", "register", json={"username": "stranger", "password": "pw-long-enough"})
        assert status == 401 and body["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]


async def test_password_closed_and_mastodon_by_invite(tmp_path: Path) -> None:
    async with mastodon_server(tmp_path, registration="invite", top={"registration": "closed"}) as (h, _fake):
        await h.user("admin", admin=True)  # not the first account any more
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        resp = await h.client.get(f"/invite/{invite['token']}")
        page = html_unescape(await resp.text())
        assert resp.status == 200 and "My Mastodon" in page and 'name="password"' not in page
        # the password form, posted anyway, is refused: password sign-up is closed
        resp = await h.client.post(
            f"/invite/{invite['token']}", data={"username": "x", "password": "p" * 10, "password2": "p" * 10}
        )
        assert resp.status == 403 and not h.hs.accounts.exists("@x:hs.test")
        status, page = await sign_in(h, "quinn", query=f"&org.homeserver.invite={invite['token']}")
        assert status == 200 and h.hs.accounts.exists("@quinn:hs.test")


async def test_check_rules_reads_the_documented_attributes() -> None:
    config = Config.model_validate({"sso": {"mastodon": [{"url": "https://m.example", "min_account_age_days": 30}]}})
    rules = config.sso.mastodon[0]
    now = time.time()
    old = {"created_at": "2016-11-24T00:00:00.000Z", "bot": False}
    mastodon.check_rules(old, rules, now)
    for account, rule in (
        ({**old, "suspended": True}, "restricted"),
        ({**old, "limited": True}, "restricted"),
        ({**old, "bot": True}, "bot"),
        ({**old, "created_at": datetime.fromtimestamp(now - 86_400, UTC).isoformat()}, "young"),
        ({**old, "created_at": "yesterday"}, "young"),
        ({"bot": False}, "young"),
    ):
        with pytest.raises(mastodon.AccountRefused) as refused:
            mastodon.check_rules(account, rules, now)
        assert refused.value.rule == rule, account


async def test_an_opened_invite_goes_with_the_mastodon_button_of_the_oauth_sign_in(tmp_path: Path) -> None:
    # Element X lands on the sign-in page (prompt=consent): with a provider that takes invites, the
    # invite link opened earlier in the same browser must not be lost on the way to Mastodon.
    async with mastodon_server(tmp_path, registration="invite") as (h, _fake):
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        page_url = "/_homeserver/oauth/login?next=" + quote("/_homeserver/oauth/consent?req=R1", safe="")
        button = re.compile(r'href="(/_matrix/client/v3/login/sso/redirect/masto[^"]*)"')
        without = button.search(await (await h.client.get(page_url)).text())
        assert without is not None and "org.homeserver.invite" not in html_unescape(without.group(1))
        assert (await h.client.get(f"/invite/{invite['token']}")).status == 200  # sets the browser's invite
        found = button.search(await (await h.client.get(page_url)).text())
        assert found is not None
        assert f"org.homeserver.invite={invite['token']}" in html_unescape(found.group(1))
