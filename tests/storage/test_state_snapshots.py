from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.engine import Store
from storage.state_snapshots import MAX_LAYERS, SNAPSHOT, StateSnapshots, state_hash

# one step: (parent index or -1 for a fresh root, changes, removals, commit?)
steps = st.lists(
    st.tuples(
        st.integers(min_value=-1, max_value=30),
        st.dictionaries(st.integers(1, 40), st.integers(1, 1000), max_size=12),
        st.lists(st.integers(1, 40), max_size=6),
        st.booleans() | st.just(True),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_random_state_evolutions_read_back_exactly(tmp_path_factory: object, plan: list) -> None:  # type: ignore[type-arg]
    path = tmp_path_factory.mktemp("snap") / "db"  # type: ignore[attr-defined]
    models: dict[int, dict[int, int]] = {}
    with Store(path) as store:
        snaps = StateSnapshots(store, cache_entries=50)  # a tiny cache forces reads from disk
        ids: list[int] = []
        for parent_index, changes, removals, commit in plan:
            parent = ids[parent_index % len(ids)] if ids and parent_index >= 0 else None
            base = dict(models[parent]) if parent else {}
            batch = store.batch()
            sid = snaps.save_changes(parent, changes, removals, batch=batch)
            expected = dict(base)
            for k in removals:
                if k not in changes:
                    expected.pop(k, None)
            expected.update(changes)
            assert dict(snaps.load(sid)) == expected  # readable inside its own batch
            if commit:
                store.commit_now(batch)
                assert models.get(sid, expected) == expected  # a reused id means an equal state
                models[sid] = expected
                ids.append(sid)
            else:
                batch.abort()
        for sid, model in models.items():
            assert dict(snaps.load(sid)) == model
            assert snaps.chain_length(sid) <= MAX_LAYERS
            assert snaps.hash_of(sid) == state_hash(model)
    with Store(path) as store:  # and after reopening, from disk alone
        snaps = StateSnapshots(store)
        for sid, model in models.items():
            assert dict(snaps.load(sid)) == model


def test_identical_states_are_stored_once(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        snaps = StateSnapshots(store)
        with store.batch() as b:
            a = snaps.save_changes(None, {1: 10, 2: 20}, batch=b)
            store.commit_now(b)
        with store.batch() as b:
            x = snaps.save_changes(a, {3: 30}, batch=b)
            y = snaps.save_changes(a, {3: 30}, batch=b)  # same batch, same state
            z = snaps.save_changes(x, {3: 31}, batch=b)
            back = snaps.save_changes(z, {3: 30}, batch=b)  # back to x's state by another path
            store.commit_now(b)
        assert x == y == back and z != x
        assert snaps.save_changes(a, {}, batch=store.batch()) == a
        assert store.count(SNAPSHOT) == 3


def test_cost_per_state_change_is_small_in_a_large_room(tmp_path: Path) -> None:
    """10,000 members, then 2,000 single membership changes: stored entries stay O(change)."""
    rng = random.Random(7)
    with Store(tmp_path / "db") as store:
        snaps = StateSnapshots(store)
        with store.batch() as b:
            sid = snaps.save_changes(None, {k: k for k in range(1, 10_001)}, batch=b)
            store.commit_now(b)
        model = {k: k for k in range(1, 10_001)}
        stored = 0
        next_event = 20_000
        for _ in range(2_000):
            key = rng.randint(1, 12_000)
            next_event += 1
            model[key] = next_event
            with store.batch() as b:
                sid = snaps.save_changes(sid, {key: next_event}, batch=b)
                store.commit_now(b)
            stored += snaps.stored_entries(sid)
        assert dict(snaps.load(sid)) == model
        # amortised, well under the 10,000 entries a full copy per change would cost
        assert stored / 2_000 < 40, stored / 2_000
