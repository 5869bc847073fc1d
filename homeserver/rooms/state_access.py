"""State as the room service sees it: snapshots of short ids turned into `(type, state_key) -> event id`
maps, a lazy event map over storage for state resolution, and auth chains from the stored ones.

A large resolution may run in a worker thread (`thread_reads`): it then reads through readers of
its own, straight from the store (LevelDB reads are thread-safe) with caches no other thread
touches; the server's readers and caches stay the event loop's alone. Names handed out by a batch
not yet written are in the server's caches only: for those the thread asks the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from homeserver.protocol.room_versions import RoomVersion
from homeserver.state import EventMapAuthChains, EventSource, resolve_state
from storage.cache import CacheRegistry
from storage.database import Database
from storage.events import EventMeta, EventStore
from storage.shortids import ShortIds

StateKey = tuple[str, str]
T = TypeVar("T")
THREAD_CACHE_MB = 16  # the caches of one resolution in a worker thread, dropped with it
LOOP_ANSWER_TIMEOUT_S = 60.0


class IdReads(Protocol):
    def event(self, event_id: str) -> int | None: ...
    def event_id(self, short: int) -> str: ...
    def state_key(self, event_type: str, state_key: str) -> int | None: ...
    def state_key_of(self, short: int) -> tuple[str, str]: ...


class EventReads(Protocol):
    def get_json(self, short: int) -> dict[str, Any] | None: ...
    def get_meta(self, short: int) -> EventMeta | None: ...
    def auth_chain(self, short: int) -> tuple[int, ...] | None: ...


class StateReads(Protocol):
    """What state resolution reads: a `Database`, or the readers of a worker thread."""

    @property
    def ids(self) -> IdReads: ...
    @property
    def events(self) -> EventReads: ...


class StoredEventMap(Mapping[str, Mapping[str, Any]]):
    """Event id -> event, read from storage only when state resolution asks for it."""

    def __init__(self, db: StateReads, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
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

    def __init__(self, source: EventSource, db: StateReads) -> None:
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
    """Resolve the states of several snapshots; returns short state key -> short event id."""
    return resolve_loaded(db, room_version, load_states(db, snapshots), extra_events)


def load_states(db: Database, snapshots: Sequence[int]) -> list[Mapping[int, int]]:
    return [db.snapshots.load(s) if s else {} for s in snapshots]


def conflicted_keys(states: Sequence[Mapping[int, int]]) -> int:
    """How many state keys the states disagree on (present in some only, or with other events):
    a cheap measure of the work a resolution of them is."""
    first = states[0]
    keys: set[int] = set()
    for other in states[1:]:
        if other is not first:
            keys.update(k for k, _ in first.items() ^ other.items())
    return len(keys)


def resolve_loaded(
    db: StateReads,
    room_version: RoomVersion,
    states: Sequence[Mapping[int, int]],
    extra_events: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[int, int]:
    """Resolve loaded states (short state key -> short event id each); returns the same shape.

    Only the conflicted part is converted to ids: entries equal in every snapshot pass through.
    """
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


def thread_reads(db: Database, loop: asyncio.AbstractEventLoop) -> StateReads:
    """Readers for a resolution in a worker thread, made on the event loop (`loop`) beforehand."""
    caches = CacheRegistry(THREAD_CACHE_MB)
    return _ThreadReads(_ThreadIds(ShortIds(db.store, caches), db.ids, loop), EventStore(db.store, caches))


class _ThreadReads:
    __slots__ = ("events", "ids")

    def __init__(self, ids: IdReads, events: EventReads) -> None:
        self.ids = ids
        self.events = events


class _ThreadIds:
    """Short ids read by a worker thread: its own reader first; what the store does not hold yet
    (given out by a batch not written yet) is asked of the server's reader, on the event loop."""

    __slots__ = ("loop", "own", "shared")

    def __init__(self, own: ShortIds, shared: ShortIds, loop: asyncio.AbstractEventLoop) -> None:
        self.own = own
        self.shared = shared
        self.loop = loop

    def _on_loop(self, read: Callable[[], T]) -> T:
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(read())
            except BaseException as e:  # handed to the waiting thread as it is
                done.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=LOOP_ANSWER_TIMEOUT_S)  # a loop that stopped must not hang the thread

    def event(self, event_id: str) -> int | None:
        found = self.own.event(event_id)
        return found if found is not None else self._on_loop(lambda: self.shared.event(event_id))

    def event_id(self, short: int) -> str:
        try:
            return self.own.event_id(short)
        except KeyError:
            return self._on_loop(lambda: self.shared.event_id(short))

    def state_key(self, event_type: str, state_key: str) -> int | None:
        found = self.own.state_key(event_type, state_key)
        return found if found is not None else self._on_loop(lambda: self.shared.state_key(event_type, state_key))

    def state_key_of(self, short: int) -> tuple[str, str]:
        try:
            return self.own.state_key_of(short)
        except KeyError:
            return self._on_loop(lambda: self.shared.state_key_of(short))


class _RejectedLookup:
    def __init__(self, db: StateReads) -> None:
        self.db = db

    def __call__(self, event_id: str) -> bool:
        short = self.db.ids.event(event_id)
        meta = self.db.events.get_meta(short) if short is not None else None
        return bool(meta and meta.rejected)
