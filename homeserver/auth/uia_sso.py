"""The `m.login.sso` stage of user-interactive authentication: a user whose account is linked to an
upstream provider confirms a sensitive operation by signing in there again.

spec: client-server-api "Single Sign-On" (UIA stage), "Fallback", and "SSO during User-Interactive
Authentication":
  1. the stage is offered to a user who has an identity at a configured provider (as Synapse does:
     it offers `m.login.sso` iff the user has an SSO mapping), so accounts made through single
     sign-on, which have no password, can still delete devices, reset cross-signing or deactivate;
  2. the client opens `/_matrix/client/v3/auth/m.login.sso/fallback/web?session=…` in a browser: a
     page of ours says what is being confirmed (spec: "Security considerations" 1 — the provider may
     confirm silently, so the user must see what they allow) and links to the provider(s) the user
     is linked to; each link's `state` is bound to a cookie set by that page (spec: consideration 2);
  3. back at our callback the `state` is checked and spent as for a login (homeserver/auth/sso.py);
     the identity comes here: only if (provider, subject) is linked to the user the UIA session
     belongs to is the stage marked complete; another user, or nobody, gets an error page and the
     session stays as it was;
  4. the completion page runs the spec's script (`onAuthDone` / `postMessage("authDone")`) and the
     client retries its request with only the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from homeserver.auth.sso import Completed, SingleSignOn, SsoFailed
from homeserver.auth.uia import SSO, StageFailed, UiaSession, UserInteractiveAuth
from storage.external_ids import ExternalIdStore

log = logging.getLogger(__name__)

PURPOSE = "uia"
FALLBACK_PATH = f"/_matrix/client/v3/auth/{SSO}/fallback/web"


@dataclass(frozen=True)
class Reauthentication:
    """What the fallback page shows: who confirms what, and with which providers (id, name)."""

    session_id: str
    user_id: str
    action: str
    providers: list[tuple[str, str]]


class SsoReauth:
    def __init__(self, uia: UserInteractiveAuth, sso: SingleSignOn, external_ids: ExternalIdStore) -> None:
        self.uia = uia
        self.sso = sso
        self.external_ids = external_ids
        uia.add_stage(SSO, self._stage)
        uia.add_user_stage(SSO, self.available)
        sso.add_identity_handler(PURPOSE, self._on_identity)

    def providers_of(self, user_id: str) -> list[tuple[str, str]]:
        """(id, name) of the configured providers `user_id` has an identity at, in the config's order.
        A link to a provider no longer configured cannot be used (Synapse logs and skips it too)."""
        linked = {provider for provider, _ in self.external_ids.of_user(user_id)}
        return [(p["id"], p["name"]) for p in self.sso.identity_providers() if p["id"] in linked]

    def available(self, user_id: str) -> bool:
        return bool(self.providers_of(user_id))

    async def _stage(self, session: UiaSession, auth: dict[str, object], ip: str | None) -> None:
        """A client that sends `m.login.sso` itself has not been through the browser (a stage done
        there is already in `completed` and never reaches this checker)."""
        raise StageFailed(
            "M_UNAUTHORIZED", f"confirm with single sign-on first: open {FALLBACK_PATH}?session=<session> in a browser"
        )

    # -- the fallback page -------------------------------------------------------------------------

    def view(self, session_id: str) -> Reauthentication:
        """The confirmation to show for a UIA session; SsoFailed (a page) when it cannot be done."""
        session = self.uia.get(session_id) if session_id else None
        if session is None:
            raise SsoFailed("uia_session", 400, "unknown or expired UIA session")
        if session.user_id is None:
            raise SsoFailed("uia_no_provider", 400, "this session has no user to confirm (registration)")
        providers = self.providers_of(session.user_id)
        if not providers:
            raise SsoFailed("uia_no_provider", 400, f"{session.user_id} has no single sign-on identity")
        return Reauthentication(session.id, session.user_id, session.action, providers)

    async def links(self, view: Reauthentication, cookie: str) -> list[tuple[str, str]]:
        """(provider name, authorization URL) for each of the user's providers, every attempt bound
        to `cookie` and to the UIA session."""
        out = []
        for provider, name in view.providers:
            url, _ = await self.sso.start(provider, None, purpose=PURPOSE, context=view.session_id, cookie=cookie)
            out.append((name, url))
        return out

    # -- back from the provider --------------------------------------------------------------------

    async def _on_identity(self, provider: str, subject: str, session_id: str) -> Completed:
        session = self.uia.get(session_id)
        if session is None or session.user_id is None:
            raise SsoFailed("uia_session", 400, "the UIA session expired or was used")
        linked = self.external_ids.get(provider, subject)
        user_id = str(linked["user_id"]) if linked is not None else None
        if user_id != session.user_id or not self.uia.complete_out_of_band(session_id, SSO, user_id):
            log.warning(
                "UIA by single sign-on for %s: %s/%s is %s; not confirmed",
                session.user_id,
                provider,
                subject,
                user_id or "linked to nobody",
            )
            raise SsoFailed("uia_wrong_user", 403, "the upstream identity is not the session's user")
        return Completed(user_id, "", False, "", page="uia_done")
