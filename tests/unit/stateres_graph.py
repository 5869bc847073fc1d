"""A small room-DAG builder for state resolution tests, so that tests read like stories.

Each event gets `prev_events` (the current head unless told otherwise), `auth_events` picked by the
auth events selection from the state before it, increasing `origin_server_ts` and `depth`. The state
after each event is kept: a merge resolves the states after its prev events with `resolve_state`,
and an event that fails the auth rules against the state before it is recorded as rejected and does
not change the state (spec: server-server-api "Rejection").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from homeserver.protocol.auth_rules import auth_types_for_event, check_auth
from homeserver.protocol.errors import ProtocolError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version
from homeserver.state import resolve_state

StateKey = tuple[str, str]
CREATE: StateKey = ("m.room.create", "")
POWER_LEVELS: StateKey = ("m.room.power_levels", "")
JOIN_RULES: StateKey = ("m.room.join_rules", "")
TOPIC: StateKey = ("m.room.topic", "")

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CAROL = "@carol:example.com"
DAVE = "@dave:example.com"
EVE = "@eve:example.com"


def member(user_id: str) -> StateKey:
    return ("m.room.member", user_id)


def _label(event_type: str, sender: str, content: Mapping[str, Any], state_key: str | None) -> str:
    who = sender[1:].split(":")[0]
    if event_type == "m.room.member" and state_key is not None:
        target = state_key[1:].split(":")[0]
        action = str(content.get("membership"))
        return f"{action}-{target}" if target == who else f"{action}-{target}-by-{who}"
    return f"{event_type.rsplit('.', 1)[-1]}-{who}"


class RoomGraph:
    """One room's events, built one at a time."""

    def __init__(self, room_version: str, creator: str = ALICE) -> None:
        self.rv: RoomVersion = get_room_version(room_version)
        self.creator = creator
        self.events: dict[str, dict[str, Any]] = {}
        self.state_after: dict[str, dict[StateKey, str]] = {}
        self.rejected: set[str] = set()
        self.names: dict[str, str] = {}
        self.room_id = "!room:example.com"
        self.head: str | None = None
        self.clock = 0
        self._count = 0

    # --- building -------------------------------------------------------------------------------

    def create_room(
        self,
        power_levels: Mapping[str, Any] | None = None,
        join_rule: str = "public",
    ) -> str:
        """Create event, the creator's join, power levels (creator 100 before v12) and join rules."""
        content: dict[str, Any] = {"room_version": self.rv.identifier}
        if not self.rv.implicit_room_creator:
            content["creator"] = self.creator
        self.add("m.room.create", self.creator, content, state_key="", name="create")
        self.add("m.room.member", self.creator, {"membership": "join"}, state_key=self.creator, name="join-creator")
        levels: dict[str, Any] = {"users": {} if self.rv.privileged_creators else {self.creator: 100}}
        levels.update(power_levels or {})
        self.add("m.room.power_levels", self.creator, levels, state_key="", name="pl-initial")
        return self.add("m.room.join_rules", self.creator, {"join_rule": join_rule}, state_key="", name="jr-initial")

    def add(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev: str | Sequence[str] | None = None,
        ts: int | None = None,
        event_id: str | None = None,
        name: str | None = None,
    ) -> str:
        """Add an event after `prev` (default: the head) and return its id; it becomes the head."""
        prevs = [] if self.head is None and prev is None else self._prevs(prev)
        state_before = self.state_before(prevs)
        self.clock = self.clock + 1 if ts is None else ts
        self._count += 1
        event: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": dict(content),
            "origin_server_ts": self.clock,
            "depth": 1 + max((int(self.events[p]["depth"]) for p in prevs), default=0),
        }
        if state_key is not None:
            event["state_key"] = state_key
        is_create = event_type == "m.room.create"
        if not (is_create and self.rv.room_id_from_create_event):
            event["room_id"] = self.room_id
        auth_ids = [state_before[k] for k in auth_types_for_event(event, self.rv) if k in state_before]
        event["prev_events"] = self._refs(prevs)
        event["auth_events"] = self._refs(auth_ids)
        label = name or _label(event_type, sender, content, state_key)
        if event_id is None:
            if is_create and self.rv.uses_reference_hash_ids:
                # The create event keeps its real reference hash as id (a v12 room id derives from
                # it); other ids are readable names, taken as given like any event id.
                event_id = compute_event_id(event, self.rv)
            else:
                event_id = f"${self._count:03d}-{label}"
                if self.rv.event_format is EventFormat.V1:
                    event_id += ":example.com"
        if self.rv.event_format is EventFormat.V1:
            event["event_id"] = event_id
        if is_create and self.rv.room_id_from_create_event:
            self.room_id = "!" + event_id[1:]
        self.events[event_id] = event
        self.names[event_id] = label
        after = dict(state_before)
        if self._allowed(event, state_before):
            if state_key is not None:
                after[(event_type, state_key)] = event_id
        else:
            self.rejected.add(event_id)
        self.state_after[event_id] = after
        self.head = event_id
        return event_id

    def _prevs(self, prev: str | Sequence[str] | None) -> list[str]:
        if prev is None:
            assert self.head is not None
            return [self.head]
        return [prev] if isinstance(prev, str) else list(prev)

    def _refs(self, ids: Sequence[str]) -> list[Any]:
        if self.rv.event_format is EventFormat.V1:
            return [[i, {"sha256": "not-checked"}] for i in ids]
        return list(ids)

    def _allowed(self, event: Mapping[str, Any], state: Mapping[StateKey, str]) -> bool:
        auth = {k: self.events[v] for k, v in state.items()}
        try:
            check_auth(event, auth, self.rv, create_event_id=state.get(CREATE))
        except ProtocolError:
            return False
        return True

    def with_creator(self, users: Mapping[str, int]) -> dict[str, int]:
        """A `users` map that also gives the creator 100, except in rooms where creators may not be
        listed (rooms/v12 auth rule 10.4)."""
        base = {} if self.rv.privileged_creators else {self.creator: 100}
        return base | dict(users)

    # --- shortcuts ------------------------------------------------------------------------------

    def join(self, user: str, **kw: Any) -> str:
        return self.add("m.room.member", user, {"membership": "join"}, state_key=user, **kw)

    def leave(self, user: str, target: str | None = None, **kw: Any) -> str:
        return self.add("m.room.member", user, {"membership": "leave"}, state_key=target or user, **kw)

    def invite(self, sender: str, target: str, **kw: Any) -> str:
        return self.add("m.room.member", sender, {"membership": "invite"}, state_key=target, **kw)

    def ban(self, sender: str, target: str, **kw: Any) -> str:
        return self.add("m.room.member", sender, {"membership": "ban"}, state_key=target, **kw)

    def topic(self, sender: str, text: str, **kw: Any) -> str:
        return self.add("m.room.topic", sender, {"topic": text}, state_key="", **kw)

    def join_rules(self, sender: str, rule: str, **kw: Any) -> str:
        return self.add("m.room.join_rules", sender, {"join_rule": rule}, state_key="", **kw)

    def power_levels(self, sender: str, users: Mapping[str, int], **kw: Any) -> str:
        """A power levels event: the current content with `users` replaced."""
        prevs = self._prevs(kw.get("prev"))
        current = self.state_before(prevs).get(POWER_LEVELS)
        content = dict(self.events[current]["content"]) if current else {}
        content["users"] = dict(users)
        return self.add("m.room.power_levels", sender, content, state_key="", **kw)

    def message(self, sender: str, text: str, **kw: Any) -> str:
        return self.add("m.room.message", sender, {"msgtype": "m.text", "body": text}, **kw)

    # --- reading --------------------------------------------------------------------------------

    def state_before(self, prevs: Sequence[str]) -> dict[StateKey, str]:
        if not prevs:
            return {}
        if len(prevs) == 1:
            return dict(self.state_after[prevs[0]])
        return self.resolve(*prevs)

    def resolve(self, *extremities: str) -> dict[StateKey, str]:
        """The resolved state after `extremities` (what a merge event on them would see)."""
        return resolve_state(
            self.rv.identifier, [self.state_after[e] for e in extremities], self.events, rejected=self.rejected
        )

    def state(self, event_id: str) -> dict[StateKey, str]:
        return self.state_after[event_id]

    def content(self, event_id: str | None) -> Any:
        return None if event_id is None else self.events[event_id]["content"]

    def describe(self, state: Mapping[StateKey, str]) -> dict[StateKey, str]:
        """The state with readable names instead of ids, for assertion messages."""
        return {k: self.names.get(v, v) for k, v in sorted(state.items())}
