"""Short ids: event ids, (type, state_key) pairs and room ids each map to a u64, both ways.

State snapshots, timelines and indexes store the 8-byte short ids instead of the long strings.
Ids are handed out in memory at once and written by the batch that first needs them; if that
batch is dropped, they are forgotten (a gap in the numbering is harmless). Until a batch lands, its
new ids live in `pending`, not only in the LRU caches: one batch may make more ids than a cache
holds (a join's send_join answer brings thousands of state keys), and an id evicted before it is
written would be looked up in vain, or handed out twice.
"""

from __future__ import annotations

from storage.cache import DEFAULT_BUDGET_MB, CacheRegistry, LruCache
from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

EVENT_TO_SHORT = Table("eventid_short", ("str",), "event", "event id -> short event id")
SHORT_TO_EVENT = Table("short_eventid", ("event",), "str", "short event id -> event id")
STATEKEY_TO_SHORT = Table("statekey_short", ("str", "str"), "statekey", "(type, state_key) -> short state key")
SHORT_TO_STATEKEY = Table("short_statekey", ("statekey",), "str", "short state key -> type 0xFF state_key")
ROOM_TO_SHORT = Table("roomid_short", ("str",), "room", "room id -> short room id")
SHORT_TO_ROOM = Table("short_roomid", ("room",), "str", "short room id -> room id")

TABLES = (EVENT_TO_SHORT, SHORT_TO_EVENT, STATEKEY_TO_SHORT, SHORT_TO_STATEKEY, ROOM_TO_SHORT, SHORT_TO_ROOM)


class _Namespace:
    """One kind of short id: a forward table, a reverse table, a counter and caches."""

    def __init__(
        self,
        store: Store,
        forward: Table,
        reverse: Table,
        cache: LruCache[bytes, int],
        reverse_cache: LruCache[int, bytes],
    ) -> None:
        self.store = store
        self.forward = forward
        self.reverse = reverse
        # The highest id in use is the last key of the reverse table: no counter to keep in step.
        last = next(store.keys(reverse, reverse=True), None)
        self.last = read_u64(last) if last else 0
        self.cache = cache
        self.reverse_cache = reverse_cache
        # names given an id by batches not yet committed -> (the id, those batches), and back
        self.pending: dict[bytes, tuple[int, list[Batch]]] = {}
        self.pending_names: dict[int, bytes] = {}

    def get(self, name: bytes) -> int | None:
        short = self.cache.get(name)
        if short is not None:
            return short
        entry = self.pending.get(name)
        if entry is not None:
            return entry[0]
        raw = self.store.get(self.forward, name)
        if raw is None:
            return None
        short = read_u64(raw)
        self.cache.put(name, short)
        return short

    def get_or_create(self, name: bytes, batch: Batch) -> int:
        short = self.get(name)
        if short is not None:
            entry = self.pending.get(name)
            if entry is not None and batch not in entry[1]:
                # Made by a batch that is not written yet (e.g. waiting for a group commit): write the
                # mapping here too, so this batch never depends on that one landing.
                self._adopt(name, short, batch, entry[1])
            return short
        return self.create(name, batch)

    def create(self, name: bytes, batch: Batch) -> int:
        """A new id for a name the caller knows has none (no lookup)."""
        self.last += 1
        short = self.last
        self.cache.put(name, short)
        self.reverse_cache.put(short, name)
        self._adopt(name, short, batch, [])
        return short

    def _adopt(self, name: bytes, short: int, batch: Batch, owners: list[Batch]) -> None:
        batch.put(self.forward, name, u64(short))
        batch.put(self.reverse, u64(short), name)
        owners.append(batch)
        self.pending[name] = (short, owners)
        self.pending_names[short] = name

        def forget() -> None:
            entry = self.pending.get(name)
            if entry is not None and entry[1] is owners:
                del self.pending[name]
                self.pending_names.pop(short, None)

        def aborted() -> None:
            if batch in owners:
                owners.remove(batch)
            if not owners and self.pending.get(name, (0, None))[1] is owners:
                # no batch will write it: forget it (a gap in the numbering is harmless)
                forget()
                self.cache.discard(name)
                self.reverse_cache.discard(short)

        batch.on_commit.append(forget)  # durable now: the store answers for it
        batch.on_abort.append(aborted)

    def name_of(self, short: int) -> bytes | None:
        name = self.reverse_cache.get(short)
        if name is not None:
            return name
        name = self.pending_names.get(short)
        if name is not None:
            return name
        name = self.store.get(self.reverse, u64(short))
        if name is not None:
            self.reverse_cache.put(short, name)
        return name


class ShortIds:
    def __init__(self, store: Store, caches: CacheRegistry | None = None) -> None:
        caches = caches if caches is not None else CacheRegistry(DEFAULT_BUDGET_MB)

        def namespace(forward: Table, reverse: Table, name: str, share: str) -> _Namespace:
            # the budget's share split between the two directions
            to_short = caches.lru(f"ids.{name}_to_short", share, part=0.5)
            to_name = caches.lru(f"ids.short_to_{name}", share, part=0.5)
            return _Namespace(store, forward, reverse, to_short, to_name)

        self._events = namespace(EVENT_TO_SHORT, SHORT_TO_EVENT, "event", "ids.events")
        self._state_keys = namespace(STATEKEY_TO_SHORT, SHORT_TO_STATEKEY, "state_key", "ids.state_keys")
        self._rooms = namespace(ROOM_TO_SHORT, SHORT_TO_ROOM, "room", "ids.rooms")

    # events
    def event(self, event_id: str) -> int | None:
        return self._events.get(event_id.encode())

    def event_or_create(self, event_id: str, batch: Batch) -> int:
        return self._events.get_or_create(event_id.encode(), batch)

    def new_event(self, event_id: str, batch: Batch) -> int:
        """A short id for an event id known to be new (an event this server just built)."""
        return self._events.create(event_id.encode(), batch)

    def event_id(self, short: int) -> str:
        name = self._events.name_of(short)
        if name is None:
            raise KeyError(f"unknown short event id {short}")
        return name.decode()

    # state keys
    @staticmethod
    def _sk(event_type: str, state_key: str) -> bytes:
        return event_type.encode() + SEP + state_key.encode()

    def state_key(self, event_type: str, state_key: str) -> int | None:
        return self._state_keys.get(self._sk(event_type, state_key))

    def state_key_or_create(self, event_type: str, state_key: str, batch: Batch) -> int:
        return self._state_keys.get_or_create(self._sk(event_type, state_key), batch)

    def state_key_of(self, short: int) -> tuple[str, str]:
        name = self._state_keys.name_of(short)
        if name is None:
            raise KeyError(f"unknown short state key {short}")
        t, _, sk = name.partition(SEP)
        return t.decode(), sk.decode()

    # rooms
    def room(self, room_id: str) -> int | None:
        return self._rooms.get(room_id.encode())

    def room_or_create(self, room_id: str, batch: Batch) -> int:
        return self._rooms.get_or_create(room_id.encode(), batch)

    def room_id(self, short: int) -> str:
        name = self._rooms.name_of(short)
        if name is None:
            raise KeyError(f"unknown short room id {short}")
        return name.decode()
