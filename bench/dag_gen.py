"""Deterministic forked room DAGs for state-resolution benchmarks and tests.

`generate(GenConfig(n_events=10_000))` builds one room: a linear base (create, power levels, join
rules, the first members), then several concurrent branches, one per server, as if the room were
partitioned and each server went on alone. Branches are merged a few times (some branches into
one) and finally all together; every merge is recorded as a `MergePoint` with the state sets that
had to be resolved.

Every event passes the auth rules against the state before it: the generator only picks actions
that the room's current state allows (a sender who is joined and has the power level the action
needs, a target whose membership allows the change), and takes `auth_events` from that state with
the spec's auth-event selection (spec: server-server-api "Auth events selection"). The state before
a merge event is the resolution of its parents' states, computed by the `resolver` the caller
gives. Event ids are real reference hashes and `hashes.sha256` a real content hash, so any
implementation (Synapse included) derives the same ids; signatures are optional.

The same seed and config always give the same DAG, byte for byte, provided the resolver agrees.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.protocol import unpadded_base64
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_ids import room_id_from_create_event
from homeserver.protocol.hashes import content_hash
from homeserver.protocol.room_versions import RoomVersion, get_room_version

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]
Event = dict[str, Any]
# (state sets after each parent) -> resolved state; the generator's view of "the" resolution.
Resolver = Callable[[list[StateMap]], Mapping[StateKey, str]]
# Called once per event, in topological order, as soon as it exists.
EventHook = Callable[[str, Event], None]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")
MEMBER = "m.room.member"

ADMIN_LEVEL = 100
MOD_LEVEL = 50
# spec: rooms/v12 — creators have infinite power; any finite level compares below this.
CREATOR_LEVEL = 1 << 62

# Relative weights of the actions a branch takes at each step. Power-level changes, kicks, bans
# and join-rule flips are the power events state resolution orders first; the rest goes through
# the mainline ordering.
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "message": 25,
    "join": 20,
    "leave": 9,
    "profile": 4,
    "invite": 5,
    "kick": 4,
    "ban": 3,
    "unban": 2,
    "topic": 6,
    "name": 2,
    "power_levels": 3,
    "join_rules": 1,
}

_BASE_PL_EVENTS = {
    "m.room.name": 50,
    "m.room.power_levels": 100,
    "m.room.history_visibility": 100,
    "m.room.canonical_alias": 50,
    "m.room.avatar": 50,
    "m.room.tombstone": 100,
    "m.room.server_acl": 100,
    "m.room.encryption": 100,
}


@dataclass(frozen=True)
class GenConfig:
    """What to generate. `n_events` counts every event in the DAG, merge events included."""

    n_events: int
    room_version: str = "10"
    seed: int = 1
    branches: int = 4  # concurrent branches, one per server
    merges: int = 4  # intermediate merges before the final merge of all branches
    users: int | None = None  # the room's population; default max(40, n_events // 20)
    sign: bool = False  # add real ed25519 signatures (slower; state resolution ignores them)
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @property
    def population(self) -> int:
        return self.users if self.users is not None else max(40, self.n_events // 20)


@dataclass
class MergePoint:
    """One resolution the DAG needed: the states after each parent of `event_id`."""

    label: str
    events_before: int  # how many events the DAG held when this merge was made
    prev_events: list[str]
    state_sets: list[StateMap]
    resolved: StateMap  # what the generator's resolver answered
    event_id: str  # the merge event


@dataclass
class Dag:
    config: GenConfig
    room_id: str
    room_version: str
    creator: str
    events: dict[str, Event]  # event id -> PDU, in topological order
    merges: list[MergePoint]

    @property
    def final(self) -> MergePoint:
        return self.merges[-1]


@dataclass
class _Branch:
    index: int
    tip: str
    state: StateMap


class _Generator:
    def __init__(self, config: GenConfig, resolver: Resolver | None, on_event: EventHook | None) -> None:
        if config.branches < 2:
            raise ValueError("need at least two branches to fork")
        self.cfg = config
        self.rv: RoomVersion = get_room_version(config.room_version)
        self.rng = random.Random(config.seed)
        self.events: dict[str, Event] = {}
        self.depth: dict[str, int] = {}
        self.on_event = on_event
        self.resolver = resolver if resolver is not None else self._default_resolver()
        self.ts = 1_700_000_000_000
        self.counter = 0
        self.servers = [f"hs{s}.test" for s in range(config.branches)]
        self.creator = f"@admin0:{self.servers[0]}"
        self.room_id = "" if self.rv.room_id_from_create_event else f"!bench{config.seed}:{self.servers[0]}"
        self._keys = self._signing_keys() if config.sign else {}
        # Users of each server; admins and mods first (see `_population`).
        self.users_by_server: list[list[str]] = [[] for _ in self.servers]
        self.all_users: list[str] = []
        # Users that held a power level at some point, per server: where to look for moderators.
        self.privileged: list[list[str]] = [[] for _ in self.servers]
        self._population()
        self.merges: list[MergePoint] = []

    # ---------------------------------------------------------------- setup

    def _default_resolver(self) -> Resolver:
        from homeserver.state import resolve_state  # the resolver under test, if the caller gave none

        rv, events = self.cfg.room_version, self.events
        return lambda sets: resolve_state(rv, sets, events)

    def _signing_keys(self) -> dict[str, Any]:
        import nacl.signing

        return {
            s: nacl.signing.SigningKey(hashlib.sha256(f"{self.cfg.seed}:{s}".encode()).digest()) for s in self.servers
        }

    def _population(self) -> None:
        n_srv = len(self.servers)
        for s, server in enumerate(self.servers):
            admin = f"@admin{s}:{server}"
            mods = [f"@mod{s}_{k}:{server}" for k in range(2)]
            self.users_by_server[s] += [admin, *mods]
            self.privileged[s] += [admin, *mods]
        for i in range(max(0, self.cfg.population - 3 * n_srv)):
            s = i % n_srv
            self.users_by_server[s].append(f"@user{i}:{self.servers[s]}")
        for lst in self.users_by_server:
            self.all_users += lst

    # ---------------------------------------------------------------- event building

    def _now(self) -> int:
        self.ts += self.rng.randint(1, 1500)
        return self.ts

    def _auth_event_ids(
        self, state: StateMap, etype: str, sender: str, state_key: str | None, content: Mapping[str, Any]
    ) -> list[str]:
        """spec: server-server-api "Auth events selection"."""
        keys: list[StateKey] = []
        if not self.rv.room_id_from_create_event:
            keys.append(CREATE_KEY)  # spec: rooms/v12 — the create event is never selected
        keys += [POWER_KEY, (MEMBER, sender)]
        if etype == MEMBER and state_key is not None:
            keys.append((MEMBER, state_key))
            if content.get("membership") in ("join", "invite", "knock"):
                keys.append(JOIN_RULES_KEY)
        out: list[str] = []
        for k in dict.fromkeys(keys):
            eid = state.get(k)
            if eid is not None:
                out.append(eid)
        return out

    def _emit(
        self,
        prev: list[str],
        state: StateMap,
        etype: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
    ) -> str:
        """Build, hash (and sign) an event whose state before is `state`; return its id."""
        ev: Event = {
            "auth_events": []
            if etype == "m.room.create"
            else self._auth_event_ids(state, etype, sender, state_key, content),
            "content": content,
            "depth": max((self.depth[p] for p in prev), default=0) + 1,
            "origin_server_ts": self._now(),
            "prev_events": list(prev),
            "sender": sender,
            "type": etype,
        }
        if not (etype == "m.room.create" and self.rv.room_id_from_create_event):
            ev["room_id"] = self.room_id
        if state_key is not None:
            ev["state_key"] = state_key
        ev["hashes"] = {"sha256": unpadded_base64.encode(content_hash(ev, self.rv))}
        if self._keys:
            from homeserver.protocol.event_signing import add_hashes_and_signatures

            server = sender.split(":", 1)[1]
            add_hashes_and_signatures(ev, self.rv, server, "ed25519:bench", self._keys[server])
        eid = compute_event_id(ev, self.rv)
        if etype == "m.room.create" and self.rv.room_id_from_create_event:
            self.room_id = room_id_from_create_event(ev, self.rv)
        self.events[eid] = ev
        self.depth[eid] = ev["depth"]
        self.counter += 1
        if self.on_event is not None:
            self.on_event(eid, ev)
        return eid

    def _step(
        self, branch: _Branch, etype: str, sender: str, content: dict[str, Any], state_key: str | None = None
    ) -> str:
        """Append an event to a branch and apply it to the branch's state."""
        eid = self._emit([branch.tip], branch.state, etype, sender, content, state_key)
        branch.tip = eid
        if state_key is not None:
            branch.state[(etype, state_key)] = eid
        return eid

    # ---------------------------------------------------------------- reading state

    def _content(self, state: StateMap, key: StateKey) -> Mapping[str, Any] | None:
        eid = state.get(key)
        return self.events[eid]["content"] if eid is not None else None

    def _membership(self, state: StateMap, user: str) -> str | None:
        c = self._content(state, (MEMBER, user))
        return c.get("membership") if c is not None else None

    def _level(self, state: StateMap, user: str) -> int:
        """spec: rooms/v10 auth rules "power level of a user"; v12 creators are infinite."""
        if self.rv.privileged_creators and user == self.creator:
            return CREATOR_LEVEL
        pl = self._content(state, POWER_KEY)
        if pl is None:
            return ADMIN_LEVEL if user == self.creator else 0
        return int(pl.get("users", {}).get(user, pl.get("users_default", 0)))

    def _required(self, state: StateMap, etype: str, is_state: bool) -> int:
        pl = self._content(state, POWER_KEY) or {}
        default = pl.get("state_default", 50) if is_state else pl.get("events_default", 0)
        return int(pl.get("events", {}).get(etype, default))

    def _threshold(self, state: StateMap, name: str, default: int) -> int:
        pl = self._content(state, POWER_KEY) or {}
        return int(pl.get(name, default))

    def _join_rule(self, state: StateMap) -> str | None:
        c = self._content(state, JOIN_RULES_KEY)
        return c.get("join_rule") if c is not None else None

    def _pick(self, pool: list[str], ok: Callable[[str], bool], tries: int = 24) -> str | None:
        """A random member of `pool` that satisfies `ok`, by rejection sampling (deterministic)."""
        if not pool:
            return None
        for _ in range(tries):
            u = pool[self.rng.randrange(len(pool))]
            if ok(u):
                return u
        return None

    def _joined_sender(self, b: _Branch, min_level: int, privileged: bool = False) -> str | None:
        pool = self.privileged[b.index] if privileged else self.users_by_server[b.index]
        st = b.state
        return self._pick(pool, lambda u: self._membership(st, u) == "join" and self._level(st, u) >= min_level)

    # ---------------------------------------------------------------- actions

    def _act(self, action: str, b: _Branch) -> bool:
        return bool(getattr(self, f"_a_{action}")(b))

    def _a_message(self, b: _Branch) -> bool:
        u = self._joined_sender(b, self._required(b.state, "m.room.message", False))
        if u is None:
            return False
        self._step(b, "m.room.message", u, {"msgtype": "m.text", "body": f"message {self.counter}"})
        return True

    def _a_join(self, b: _Branch) -> bool:
        st = b.state
        invite_only = self._join_rule(st) != "public"

        def ok(u: str) -> bool:
            m = self._membership(st, u)
            return m == "invite" if invite_only else m not in ("join", "ban")

        u = self._pick(self.users_by_server[b.index], ok)
        if u is None:
            return False
        self._step(b, MEMBER, u, {"membership": "join", "displayname": u[1:].split(":")[0]}, u)
        return True

    def _a_profile(self, b: _Branch) -> bool:
        u = self._joined_sender(b, 0)
        if u is None:
            return False
        name = f"{u[1:].split(':')[0]} ({self.counter})"
        self._step(b, MEMBER, u, {"membership": "join", "displayname": name}, u)
        return True

    def _a_leave(self, b: _Branch) -> bool:
        st = b.state

        def ok(u: str) -> bool:
            return self._membership(st, u) in ("join", "invite") and self._level(st, u) < ADMIN_LEVEL

        u = self._pick(self.users_by_server[b.index], ok)
        if u is None:
            return False
        self._step(b, MEMBER, u, {"membership": "leave"}, u)
        return True

    def _a_invite(self, b: _Branch) -> bool:
        st = b.state
        sender = self._joined_sender(b, self._threshold(st, "invite", 0))
        if sender is None:
            return False
        target = self._pick(self.all_users, lambda u: self._membership(st, u) in (None, "leave"))
        if target is None:
            return False
        self._step(b, MEMBER, sender, {"membership": "invite"}, target)
        return True

    def _moderate(self, b: _Branch, need: int, target_ok: Callable[[str], bool], membership: str) -> bool:
        st = b.state
        sender = self._joined_sender(b, need, privileged=True)
        if sender is None:
            return False
        mine = self._level(st, sender)
        target = self._pick(self.all_users, lambda u: u != sender and target_ok(u) and self._level(st, u) < mine)
        if target is None:
            return False
        self._step(b, MEMBER, sender, {"membership": membership}, target)
        return True

    def _a_kick(self, b: _Branch) -> bool:
        st = b.state
        return self._moderate(
            b, self._threshold(st, "kick", 50), lambda u: self._membership(st, u) in ("join", "invite"), "leave"
        )

    def _a_ban(self, b: _Branch) -> bool:
        st = b.state
        return self._moderate(
            b,
            self._threshold(st, "ban", 50),
            lambda u: self._membership(st, u) is not None and self._membership(st, u) != "ban",
            "ban",
        )

    def _a_unban(self, b: _Branch) -> bool:
        st = b.state
        need = max(self._threshold(st, "ban", 50), self._threshold(st, "kick", 50))
        return self._moderate(b, need, lambda u: self._membership(st, u) == "ban", "leave")

    def _a_topic(self, b: _Branch) -> bool:
        u = self._joined_sender(b, self._required(b.state, "m.room.topic", True), privileged=True)
        if u is None:
            return False
        self._step(b, "m.room.topic", u, {"topic": f"topic {self.counter} from {u}"}, "")
        return True

    def _a_name(self, b: _Branch) -> bool:
        u = self._joined_sender(b, self._required(b.state, "m.room.name", True), privileged=True)
        if u is None:
            return False
        self._step(b, "m.room.name", u, {"name": f"room {self.counter}"}, "")
        return True

    def _a_join_rules(self, b: _Branch) -> bool:
        u = self._joined_sender(b, self._required(b.state, "m.room.join_rules", True), privileged=True)
        if u is None:
            return False
        rule = "invite" if self._join_rule(b.state) == "public" else "public"
        self._step(b, "m.room.join_rules", u, {"join_rule": rule}, "")
        return True

    def _a_power_levels(self, b: _Branch) -> bool:
        """Promote, demote or retune a threshold, within what the sender may change.

        spec: rooms/v10 auth rules 10.4–10.5 — no changed value may exceed the sender's level, and
        no other user whose old level is at or above the sender's may be changed.
        """
        st = b.state
        sender = self._joined_sender(b, self._required(st, "m.room.power_levels", True), privileged=True)
        if sender is None:
            return False
        mine = self._level(st, sender)
        old = self._content(st, POWER_KEY) or {}
        content = copy.deepcopy(dict(old))
        users: dict[str, int] = content.setdefault("users", {})
        op = self.rng.random()
        if op < 0.45:  # promote somebody below us to mod or admin
            target = self._pick(
                self.all_users,
                lambda u: (
                    u != sender
                    and u != self.creator
                    and self._level(st, u) < mine
                    and self._membership(st, u) == "join"
                ),
            )
            if target is None:
                return False
            users[target] = min(mine, self.rng.choice((MOD_LEVEL, MOD_LEVEL, ADMIN_LEVEL)))
            server = self.servers.index(target.split(":", 1)[1])
            if target not in self.privileged[server]:
                self.privileged[server].append(target)
        elif op < 0.8:  # demote a privileged user below us
            target = self._pick([u for u in users if u != sender], lambda u: self._level(st, u) < mine and users[u] > 0)
            if target is None:
                return False
            del users[target]
        else:  # retune a threshold
            name = self.rng.choice(("kick", "ban", "invite", "state_default", "topic"))
            value = self.rng.choice((0, 25, 50, 75)) if name == "invite" else self.rng.choice((25, 50, 75))
            if name == "topic":
                events: dict[str, int] = content.setdefault("events", {})
                if int(events.get("m.room.topic", content.get("state_default", 50))) > mine:
                    return False
                events["m.room.topic"] = value
            else:
                if int(content.get(name, 50 if name != "invite" else 0)) > mine:
                    return False
                content[name] = value
        if content == old:
            return False
        self._step(b, "m.room.power_levels", sender, content, "")
        return True

    # ---------------------------------------------------------------- phases

    def _base(self) -> _Branch:
        creator, rv = self.creator, self.rv
        create_content: dict[str, Any] = {"room_version": rv.identifier}
        if not rv.implicit_room_creator:
            create_content["creator"] = creator
        create = self._emit([], {}, "m.room.create", creator, create_content, "")
        b = _Branch(0, create, {CREATE_KEY: create})
        self._step(b, MEMBER, creator, {"membership": "join", "displayname": "admin0"}, creator)
        pl_users = {} if rv.privileged_creators else {creator: ADMIN_LEVEL}
        self._step(
            b,
            "m.room.power_levels",
            creator,
            {
                "users": pl_users,
                "users_default": 0,
                "events": dict(_BASE_PL_EVENTS),
                "events_default": 0,
                "state_default": 50,
                "ban": 50,
                "kick": 50,
                "redact": 50,
                "invite": 0,
            },
            "",
        )
        self._step(b, "m.room.join_rules", creator, {"join_rule": "public"}, "")
        self._step(b, "m.room.history_visibility", creator, {"history_visibility": "shared"}, "")
        self._step(b, "m.room.name", creator, {"name": "state-res bench"}, "")
        self._step(b, "m.room.topic", creator, {"topic": "the beginning"}, "")
        # Each server's admin and mods join, then the creator hands out their levels.
        staff = [u for lst in self.privileged for u in lst if u != creator]
        for u in staff:
            self._step(b, MEMBER, u, {"membership": "join", "displayname": u[1:].split(":")[0]}, u)
        pl = copy.deepcopy(dict(self._content(b.state, POWER_KEY) or {}))
        for u in staff:
            pl["users"][u] = ADMIN_LEVEL if u.startswith("@admin") else MOD_LEVEL
        self._step(b, "m.room.power_levels", creator, pl, "")
        # A tenth of the population is already in the room when it splits.
        regular = [u for u in self.all_users if u.startswith("@user")]
        for u in regular[: max(1, len(regular) // 10)]:
            self._step(b, MEMBER, u, {"membership": "join", "displayname": u[1:].split(":")[0]}, u)
        return b

    def _merge(self, into: _Branch, others: list[_Branch], label: str) -> None:
        parents = [into, *others]
        state_sets = [dict(p.state) for p in parents]
        resolved = dict(self.resolver(state_sets))
        prev = list(dict.fromkeys(p.tip for p in parents))
        before = len(self.events)
        sender = (
            self._pick(
                self.users_by_server[into.index],
                lambda u: (
                    self._membership(resolved, u) == "join"
                    and self._level(resolved, u) >= self._required(resolved, "m.room.message", False)
                ),
            )
            or self.creator
        )
        eid = self._emit(prev, resolved, "m.room.message", sender, {"msgtype": "m.text", "body": f"merged {label}"})
        into.tip, into.state = eid, resolved
        self.merges.append(MergePoint(label, before, prev, state_sets, dict(resolved), eid))

    def run(self) -> Dag:
        cfg = self.cfg
        base = self._base()
        branches = [_Branch(i, base.tip, dict(base.state)) for i in range(cfg.branches)]
        actions = list(cfg.weights)
        cum: list[float] = []
        total = 0.0
        for a in actions:
            total += cfg.weights[a]
            cum.append(total)
        n_final = max(cfg.n_events - 1, len(self.events))  # the final merge event is the last one
        span = n_final - len(self.events)
        schedule = [len(self.events) + span * (k + 1) // (cfg.merges + 1) for k in range(cfg.merges)]
        while len(self.events) < n_final:
            if schedule and len(self.events) >= schedule[0]:
                schedule.pop(0)
                into = branches[self.rng.randrange(len(branches))]
                rest = [x for x in branches if x is not into]
                k = 1 if self.rng.random() < 0.6 else self.rng.randint(1, len(rest))
                others = self.rng.sample(rest, k)
                self._merge(into, others, f"merge {len(self.merges) + 1} ({k + 1} branches)")
                continue
            b = branches[self.rng.randrange(len(branches))]
            for _ in range(8):
                r = self.rng.random() * total
                action = next(a for a, c in zip(actions, cum, strict=True) if r < c)
                if self._act(action, b):
                    break
            else:
                self._step(b, "m.room.message", self.creator, {"msgtype": "m.text", "body": "fallback"})
        self._merge(branches[0], branches[1:], f"final ({len(branches)} branches)")
        return Dag(cfg, self.room_id, cfg.room_version, self.creator, self.events, self.merges)


def generate(config: GenConfig, resolver: Resolver | None = None, on_event: EventHook | None = None) -> Dag:
    """Generate the DAG `config` describes.

    `resolver` resolves the states at each merge (default: `homeserver.state.resolve_state`);
    `on_event(event_id, pdu)` sees every event as it is made, in topological order.
    """
    return _Generator(config, resolver, on_event).run()
