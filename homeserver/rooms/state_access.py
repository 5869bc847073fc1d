"""State as the room service sees it: snapshots of short ids turned into `(type, state_key) -> event id`
maps, a lazy event map over storage for state resolution, and auth chains from the stored ones."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from homeserver.protocol.room_versions import RoomVersion
from homeserver.state import EventMapAuthChains, EventSource, resolve_state
from storage.database import Database

StateKey = tuple[str, str]


class StoredEventMap(Mapping[str, Mapping[str, Any]]):
    """Event id -> event, read from storage only when state resolution asks for it."""

    def __init__(self, db: Database, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.db = db
        self.extra = extra or {}

    def __getitem__(self, event_id: str) -> Mapping[str, Any]:
        found = self.extra.get(event_id)
        if found is not None:
            return found
        short = self.db.ids.event(event_id)
        ev = self.db.events.get_json(short) if short is not None else None
        if ev is None:
            raise KeyError(event_id)
        return ev

    def __iter__(self) -> Iterator[str]:  # state resolution never iterates: refuse to load everything
        raise TypeError("the stored event map cannot be iterated")

    def __len__(self) -> int:
        raise TypeError("the stored event map has no length")

    def __contains__(self, event_id: object) -> bool:
        if not isinstance(event_id, str):
            return False
        return event_id in self.extra or self.db.ids.event(event_id) is not None


class StoredAuthChains(EventMapAuthChains):
    """Auth chains from the stored per-event chains (short ids), falling back to walking the graph."""

    __slots__ = ("db",)

    def __init__(self, source: EventSource, db: Database) -> None:
        super().__init__(source)
        self.db = db

    def _chain_shorts(self, event_id: str) -> tuple[int, ...] | None:
        short = self.db.ids.event(event_id)
        return self.db.events.auth_chain(short) if short is not None else None

    def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        shorts: set[int] = set()
        walk: list[str] = []
        for event_id in event_ids:
            chain = self._chain_shorts(event_id)
            if chain is None:
                walk.append(event_id)
            else:
                shorts.update(chain)
        result = {self.db.ids.event_id(s) for s in shorts}
        if walk:
            result |= super().auth_chain(walk)
        return result

    def auth_chain_difference(self, state_sets: Sequence[Collection[str]]) -> set[str]:
        """As `EventMapAuthChains`: Cᵢ is the set's own events plus their auth chains."""
        chains: list[set[int]] = []
        for state_set in state_sets:
            union: set[int] = set()
            for event_id in state_set:
                short = self.db.ids.event(event_id)
                chain = self.db.events.auth_chain(short) if short is not None else None
                if short is None or chain is None:
                    return super().auth_chain_difference(state_sets)
                union.add(short)
                union.update(chain)
            chains.append(union)
        if len(chains) < 2:
            return set()
        diff = set().union(*chains) - chains[0].intersection(*chains[1:])
        return {self.db.ids.event_id(s) for s in diff}


def snapshot_to_state(db: Database, snapshot: int) -> dict[StateKey, str]:
    if not snapshot:
        return {}
    return {db.ids.state_key_of(sk): db.ids.event_id(ev) for sk, ev in db.snapshots.load(snapshot).items()}


def resolve_snapshots(
    db: Database,
    room_version: RoomVersion,
    snapshots: Sequence[int],
    extra_events: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[int, int]:
    """Resolve the states of several snapshots; returns short state key -> short event id.

    Only the conflicted part is converted to ids: entries equal in every snapshot pass through.
    """
    states = [db.snapshots.load(s) if s else {} for s in snapshots]
    if all(st is states[0] or st == states[0] for st in states[1:]):
        return dict(states[0])
    event_map = StoredEventMap(db, extra_events)
    source = EventSource(event_map, room_version)
    id_sets = [{db.ids.state_key_of(sk): db.ids.event_id(ev) for sk, ev in st.items()} for st in states]
    rejected = _RejectedLookup(db)
    resolved = resolve_state(
        room_version,
        id_sets,
        event_map,
        auth_chain_provider=StoredAuthChains(source, db),
        rejected=rejected,
    )
    out: dict[int, int] = {}
    for (etype, skey), event_id in resolved.items():
        sk = db.ids.state_key(etype, skey)
        ev = db.ids.event(event_id)
        if sk is None or ev is None:  # every resolved entry came from a stored state: both exist
            raise KeyError(f"resolved state names unknown {(etype, skey)} / {event_id}")
        out[sk] = ev
    return out


class _RejectedLookup:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __call__(self, event_id: str) -> bool:
        short = self.db.ids.event(event_id)
        meta = self.db.events.get_meta(short) if short is not None else None
        return bool(meta and meta.rejected)
