"""Large state resolutions leave the event loop: the loop keeps running while a fork of another
server is resolved, and the answers are those the inline resolution gives.

spec: server-server-api "Room State Resolution" (the result must not depend on where it runs).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from homeserver.protocol.room_versions import RoomVersion
from homeserver.rooms import pipeline as pipeline_module
from homeserver.rooms import state_access
from homeserver.rooms.state_access import resolve_loaded, resolve_snapshots
from storage.database import Database
from tests.rooms.forks import forked_room
from tests.rooms.remote import Local

Resolve = Callable[..., dict[int, int]]
N = 40  # conflicted keys: above the threshold (32)


class Recorder:
    """Wraps the pipeline's `resolve_loaded`: records each call, and whether it ran off the loop."""

    def __init__(self, real: Resolve, loop_thread: threading.Thread) -> None:
        self.real = real
        self.loop_thread = loop_thread
        self.calls: list[tuple[bool, RoomVersion, Sequence[Mapping[int, int]], dict[str, Any], dict[int, int]]] = []
        self.entered = threading.Event()  # a resolution is running in a worker thread
        self.loop_ran = threading.Event()  # the event loop did something meanwhile
        self.waited: list[bool] = []

    def __call__(
        self, reads: Any, rv: RoomVersion, states: Sequence[Mapping[int, int]], extra: dict[str, Any]
    ) -> dict[int, int]:
        off_loop = threading.current_thread() is not self.loop_thread
        if off_loop and not self.entered.is_set():
            self.entered.set()
            # the resolution cannot end before the loop has run: inline, this would never come
            self.waited.append(self.loop_ran.wait(timeout=10))
        result = self.real(reads, rv, states, extra)
        self.calls.append((off_loop, rv, states, dict(extra), result))
        return result


def inline_again(db: Database, recorder: Recorder) -> None:
    """Every resolution made in a worker thread, made again on the store, inline: the same answer."""
    threaded = [call for call in recorder.calls if call[0]]
    assert threaded
    for _, rv, states, extra, result in threaded:
        assert resolve_loaded(db, rv, states, extra) == result


async def ticker(recorder: Recorder, ticks: list[int]) -> None:
    while not recorder.entered.is_set():
        await asyncio.sleep(0)
    ticks.append(1)  # the loop runs while the resolution is in progress
    recorder.loop_ran.set()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder(resolve_loaded, threading.current_thread())
    monkeypatch.setattr(pipeline_module, "resolve_loaded", rec)
    return rec


async def test_a_fork_received_event_by_event_resolves_off_the_loop(
    local: Local, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Branch B arrives in the timeline while branch A is the room's: each event forks the room,
    and the current state is the resolution of both tips, made in a worker thread when large.
    The event being received has an id no batch has written yet: the thread asks the loop for it."""
    asked: list[bool] = []
    real_on_loop = state_access._ThreadIds._on_loop

    def on_loop(self: Any, read: Callable[[], Any]) -> Any:
        asked.append(threading.current_thread() is not recorder.loop_thread)
        return real_on_loop(self, read)

    monkeypatch.setattr(state_access._ThreadIds, "_on_loop", on_loop)
    fork = await forked_room(local, N)
    ticks: list[int] = []
    tick = asyncio.create_task(ticker(recorder, ticks))
    for pdu in fork.branch_b:
        assert (await local.pipe.receive(pdu, local.keys)).rejected is None
    merged = await local.pipe.receive(fork.merge, local.keys)
    await asyncio.wait_for(tick, 1)
    assert recorder.waited == [True] and ticks == [1]
    assert merged.rejected is None and local.extremities(fork.room_id) == {merged.event_id}
    inline_again(local.db, recorder)
    # and the room's state is the inline resolution of the two tips
    rv = local.rv(fork.room_id)
    tips = [local.meta(fork.tip_a).state_after, local.meta(fork.tip_b).state_after]
    inline = resolve_snapshots(local.db, rv, tips)
    assert dict(local.db.snapshots.load(local.meta(merged.event_id).state_before)) == inline
    assert local.snapshot_state(fork.room_id) == local.current_state(fork.room_id)
    assert asked and all(asked)
    assert dict(local.db.rooms.current_state(local.room_short(fork.room_id))) == inline


async def test_a_gap_healed_with_the_state_of_the_other_branch_resolves_off_the_loop(
    local: Local, recorder: Recorder
) -> None:
    """Branch B known only as outliers, and the merge received with the state after B's tip (as
    /state_ids answers it): one large resolution, off the loop, equal to the inline one."""
    fork = await forked_room(local, N)
    for pdu in fork.branch_b:
        await local.pipe.receive_outlier(pdu, local.keys)
    ticks: list[int] = []
    tick = asyncio.create_task(ticker(recorder, ticks))
    merged = await local.pipe.receive_after_gap(fork.merge, local.keys, {fork.tip_b: fork.state_after_b})
    await asyncio.wait_for(tick, 1)
    assert recorder.waited == [True] and ticks == [1] and merged.rejected is None
    inline_again(local.db, recorder)
    names = {v for k, v in local.current_state(fork.room_id).items() if k[0] == "m.room.member"}
    assert len(names) > N  # both branches' member events are in the resolved state, one per user


async def test_below_the_threshold_resolutions_stay_inline(local: Local, recorder: Recorder) -> None:
    fork = await forked_room(local, 8)  # 8 conflicted keys
    for pdu in fork.branch_b:
        await local.pipe.receive(pdu, local.keys)
    await local.pipe.receive(fork.merge, local.keys)
    assert recorder.calls and not any(off for off, *_ in recorder.calls)
    assert not recorder.entered.is_set()
