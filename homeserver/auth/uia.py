"""User-Interactive Authentication: flows of stages, sessions in memory, the 401 answers.

spec: client-server-api "User-Interactive Authentication API". Stage checkers are registered by
the services that own them (`m.login.password` by login, `m.login.registration_token` by
registration, `m.login.sso` by homeserver/auth/uia_sso.py), so new stages plug in without
touching this module. A stage that proves who the user is (password, single sign-on) is offered to a
user only when it can work for them (`add_user_stage`): an account made through single sign-on has
no password, so it confirms with its provider instead (as Synapse offers `m.login.sso` only to users
with a linked identity). Stages completed out of band, in a browser (spec: "Fallback"), are marked
with `complete_out_of_band`.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.auth.tokens import Requester

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"
SSO = "m.login.sso"

SESSION_LIFETIME_S = 30 * 60
MAX_SESSIONS = 10_000

Flows = list[list[str]]


class UiaSession:
    __slots__ = ("action", "completed", "data", "expires_at", "id", "kind", "user_id")

    id: str
    kind: str  # the operation it authorises: "register", "password", "deactivate", "delete_devices"
    action: str  # what the user is asked to confirm, named for the pages' catalogue (`uia_action_<action>`)
    user_id: str | None  # who must authenticate (None for registration, or until a password stage names them)
    expires_at: float  # seconds, server clock
    completed: list[str]
    data: dict[str, Any]  # what stages learnt and what the request asked

    def __init__(
        self,
        id: str,
        kind: str,
        user_id: str | None,
        expires_at: float,
        completed: list[str] | None = None,
        data: dict[str, Any] | None = None,
        action: str = "",
    ) -> None:
        self.id = id
        self.kind = kind
        self.action = action or kind
        self.user_id = user_id
        self.expires_at = expires_at
        self.completed = [] if completed is None else completed
        self.data = {} if data is None else data


class StageFailed(Exception):
    """A stage attempt failed; the client may try again (answered as 401 with `errcode`)."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


class AuthRequired(MatrixError):
    """The 401 that asks for (more) authentication: flows, params, session, completed; no `errcode`.

    spec: UIA "User-interactive API in the REST API" — the first answer carries no error.
    """

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(401, "", "authentication required")
        self.body = body

    def to_json(self) -> dict[str, Any]:
        return self.body


# (session, auth dict, client ip) -> None, or raise StageFailed / MatrixError
StageChecker = Callable[[UiaSession, dict[str, Any], str | None], Awaitable[None]]
# user id -> whether this stage can confirm that user's identity (e.g. they have a password)
StageAvailable = Callable[[str], bool]


async def _dummy(session: UiaSession, auth: dict[str, Any], ip: str | None) -> None:
    """spec: "Dummy Auth" always succeeds."""


class UserInteractiveAuth:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._sessions: OrderedDict[str, UiaSession] = OrderedDict()
        self._stages: dict[str, StageChecker] = {DUMMY: _dummy}
        self._user_stages: dict[str, StageAvailable] = {}

    def add_stage(self, stage_type: str, checker: StageChecker) -> None:
        self._stages[stage_type] = checker

    def add_user_stage(self, stage_type: str, available: StageAvailable) -> None:
        """Offer `stage_type` to re-authenticate a user for whom `available(user_id)` holds."""
        self._user_stages[stage_type] = available

    def flows_for(self, user_id: str) -> Flows:
        """The flows that let `user_id` confirm who they are: one single-stage flow per way they can
        (password first). 403 when there is none: nothing they could send would ever succeed."""
        flows = [[stage] for stage, available in self._user_stages.items() if available(user_id)]
        if not flows:
            raise MatrixError(
                403,
                "M_FORBIDDEN",
                "this account has no password and no single sign-on identity to confirm this with",
            )
        return flows

    def _prune(self) -> None:
        now = self.clock()
        while self._sessions:
            sid, oldest = next(iter(self._sessions.items()))
            if oldest.expires_at > now and len(self._sessions) <= MAX_SESSIONS:
                break
            del self._sessions[sid]

    def _new_session(self, kind: str, user_id: str | None, action: str) -> UiaSession:
        session = UiaSession(secrets.token_urlsafe(24), kind, user_id, self.clock() + SESSION_LIFETIME_S, action=action)
        self._sessions[session.id] = session
        self._prune()
        return session

    def get(self, session_id: str) -> UiaSession | None:
        session = self._sessions.get(session_id)
        if session is not None and session.expires_at <= self.clock():
            del self._sessions[session_id]
            return None
        return session

    def forget(self, session: UiaSession) -> None:
        """Drop a session once the operation it authorised has succeeded."""
        self._sessions.pop(session.id, None)

    def complete_out_of_band(self, session_id: str, stage: str, user_id: str) -> bool:
        """Mark `stage` done in a session after the user completed it in a browser (spec: UIA
        "Fallback"); the client then retries with only the session. False, and nothing marked, when
        the session is unknown or expired or belongs to another user."""
        session = self.get(session_id)
        if session is None or session.user_id is None or session.user_id != user_id:
            return False
        if stage not in session.completed:
            session.completed.append(stage)
        return True

    @staticmethod
    def _body(flows: Flows, session: UiaSession, params: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "flows": [{"stages": list(f)} for f in flows],
            "params": params or {},
            "session": session.id,
        }
        if session.completed:
            body["completed"] = list(session.completed)
        return body

    def _failed(
        self, flows: Flows, session: UiaSession, params: dict[str, Any] | None, errcode: str, message: str
    ) -> MatrixError:
        return MatrixError(401, errcode, message, **self._body(flows, session, params))

    @staticmethod
    def _done(flows: Flows, completed: list[str]) -> bool:
        return any(completed[: len(f)] == f for f in flows)

    async def authenticate(
        self,
        auth: Any,
        flows: Flows,
        *,
        kind: str,
        user_id: str | None = None,
        ip: str | None = None,
        params: dict[str, Any] | None = None,
        remember: dict[str, Any] | None = None,
        action: str = "",
    ) -> UiaSession:
        """Run one round of UIA for a request; returns the session once a whole flow is complete.

        `auth` is the request's `auth` value (None when absent). `remember` holds request fields kept
        in the session for later rounds that omit them; `action` names what the user confirms, for the
        fallback pages (the kind by default). Raises `AuthRequired` (401, more stages),
        a 401 `MatrixError` with the flows (a stage failed), or a 400 for a malformed `auth`.
        """
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "auth must be an object")
        sid = auth.get("session") if auth else None
        if sid is not None and not isinstance(sid, str):
            raise MatrixError(400, "M_BAD_JSON", "auth.session must be a string")
        if sid is None:
            # spec: a first request without auth gets the flows. A stage sent without a session (as nio
            # sends m.login.dummy) starts one; a flow is never complete without a stage, so no request
            # succeeds without auth.
            session = self._new_session(kind, user_id, action)
        else:
            found = self.get(sid)
            if found is None:
                session = self._new_session(kind, user_id, action)
                raise self._failed(flows, session, params, "M_UNKNOWN", "unknown or expired session; start again")
            session = found
            if session.kind != kind or (user_id is not None and session.user_id not in (None, user_id)):
                raise MatrixError(403, "M_FORBIDDEN", "this session belongs to another request")
            if user_id is not None:
                session.user_id = user_id
        if remember:
            session.data.setdefault("request", {}).update(remember)
        if not auth:
            raise AuthRequired(self._body(flows, session, params))

        stage = auth.get("type")
        if stage is not None and not isinstance(stage, str):
            raise MatrixError(400, "M_BAD_JSON", "auth.type must be a string")
        if stage is not None and stage not in session.completed and not self._done(flows, session.completed):
            n = len(session.completed)
            expected = {f[n] for f in flows if len(f) > n and f[:n] == session.completed}
            if stage not in expected:
                # spec: stages must be completed in the order of a flow; otherwise 401
                why = "unsupported" if not any(stage in f for f in flows) else "not the next stage of any flow"
                raise self._failed(flows, session, params, "M_FORBIDDEN", f"{stage} is {why}")
            checker = self._stages.get(stage)
            if checker is None:
                raise self._failed(flows, session, params, "M_UNRECOGNIZED", f"{stage} is not supported")
            try:
                await checker(session, auth, ip)
            except StageFailed as e:
                raise self._failed(flows, session, params, e.errcode, e.message) from None
            session.completed.append(stage)
        if self._done(flows, session.completed):
            return session
        raise AuthRequired(self._body(flows, session, params))

    async def confirm(
        self,
        requester: Requester,
        body: dict[str, Any],
        action: str,
        *,
        kind: str,
        ip: str | None,
        action_key: str = "",
    ) -> None:
        """Make the requester confirm `action` (with their password or their provider) before an
        operation goes on (e.g. replacing cross-signing keys). `kind` names the operation (its session
        serves no other); `action_key` names it for the pages' catalogue; `ip` is the client's
        address. Returns once authenticated; otherwise raises the 401."""
        if requester.is_guest:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", f"guest accounts cannot {action}")
        session = await self.authenticate(
            body.get("auth"),
            self.flows_for(requester.user_id),
            kind=kind,
            user_id=requester.user_id,
            ip=ip,
            action=action_key,
        )
        self.forget(session)
