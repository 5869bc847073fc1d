"""Device-list tracking for `/sync` and `GET /keys/changes`: who changed their keys, who now shares
a room with us, who no longer does.

spec: client-server-api, modules/end_to_end_encryption.md "Tracking the device list for a user" and
"Extensions to /sync" (`device_lists`), and `GET /keys/changes`. For the syncing user U and the
window (since, upto]:

1. `changed` lists users who share a room with U at `upto` and either updated their device or
   cross-signing keys in the window, or began sharing a room with U in it (U or they joined);
   U's own key changes are listed too. Over-reporting a user who shares a room is allowed ("a
   server may add Alice to `changed` when Alice and Bob share a new room"); listing anyone who
   shares no room with U is not.
2. `left` lists users who shared a room with U (at `since`, or at some moment in the window while
   U was joined to it) and share none at `upto` ("users with whom we do not share any encrypted rooms
   anymore"). A user who joined a room only after U left it, or was only ever invited, never
   shared a room with U: naming them would tell U who joined a room U is no longer in.
3. A user is in at most one of the two lists.

"Share a room" means both are joined members (invites and knocks do not count); every room
counts, encrypted or not, which over-reports only users U could see anyway. Membership at `since`
is rebuilt by replaying the member events of the room's live timeline after `since` (the Timeline's
`membership_changes`; backfilled history has no stream position and is never replayed) backwards
from the current membership, so a window that ends in the past (`/keys/changes?to=`) is answered
the same way.
That is why "who shares a room with U" is worked out here, at `upto`, and not asked of
`Keys.users_sharing_rooms`, which answers for the present only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.timeline import Timeline
from storage.device_lists import DeviceListStore
from storage.rooms import UserRoom

MEMBER = "m.room.member"


class _MemberChange(NamedTuple):
    user: str
    membership: str
    stream: int
    was_joined: Callable[[], bool]  # whether the user was joined just before this event


class _Replayed(NamedTuple):
    """One room at `upto`, after replaying its member events: is the user joined, and who is."""

    room: int
    present: bool
    joined: set[str]  # all joined members if `complete`, else only those with member events after `since`
    complete: bool
    changed: set[str]  # users with member events after `since`


class DeviceLists:
    def __init__(self, stream: DeviceListStore, queries: RoomQueries, timeline: Timeline) -> None:
        self._stream = stream
        self.queries = queries
        self.timeline = timeline

    def for_sync(self, user_id: str, since: int, upto: int) -> dict[str, Any]:
        device_changes = set(self._stream.changes(since, upto))
        seen: set[str] = set()  # shared a room with the user at `since` or in the window (rule 2)
        newly: set[str] = set()  # began sharing a room with the user in the window (rule 1)
        replayed: list[_Replayed] = []
        unchanged: list[int] = []  # rooms the user is joined to, with no events after `since`
        for ur in self.queries.memberships(user_id):
            if ur.membership != "join" and ur.stream <= since:
                continue  # out of the room since before `since`: nothing there was shared with the user
            if self.timeline.changed_since(ur.room, since):
                replayed.append(self._replay(user_id, ur, since, upto, seen, newly))
            elif ur.membership == "join":
                unchanged.append(ur.room)
        if not (device_changes or seen or newly):
            return {"changed": [], "left": []}
        # Who shares a room with the user (at `upto`) is only needed when something may have changed.
        shared = self._shared_at_upto(replayed, unchanged)
        changed = {u for u in device_changes if u in shared or u == user_id} | (newly & shared)
        left = seen - shared - {user_id}
        return {"changed": sorted(changed - left), "left": sorted(left)}

    def _shared_at_upto(self, replayed: list[_Replayed], unchanged: list[int]) -> set[str]:
        """Everyone joined to a room the user is joined to at `upto` (the user included)."""
        shared: set[str] = set()
        for room in unchanged:
            shared.update(self.queries.joined_members(room))
        for r in replayed:
            if r.present:
                shared |= r.joined
                if not r.complete:
                    shared.update(u for u in self.queries.joined_members(r.room) if u not in r.changed)
        return shared

    def _replay(self, user_id: str, ur: UserRoom, since: int, upto: int, seen: set[str], newly: set[str]) -> _Replayed:
        """Replay one room's member events after `since`: add to `seen` everyone joined at a moment
        the user was joined (`since` included), to `newly` who began sharing the room with the user
        in (since, upto]; return the room as it was at `upto`."""
        changes = self._member_changes(ur.room, since)
        first: dict[str, bool] = {}  # each member with changes: joined at `since`?
        for change in changes:
            if change.user not in first:
                first[change.user] = change.was_joined()
        complete = user_id in first
        if complete:
            # The user's own membership changed: everyone joined at `since` may matter (rule 2).
            joined = {u for u in self.queries.joined_members(ur.room) if u not in first}
            present = first[user_id]
        else:
            # Members without changes are joined now as they were at `since`: they share the room
            # throughout, so they belong in neither list and need not be read.
            joined = set()
            present = ur.membership == "join"
            if ur.stream > since:
                # Changed with no member event of the user's after `since` (a state resolution moved
                # it): where the user stood at `since` is unknown, so nothing counts as seen then.
                if present:
                    newly.update(self.queries.joined_members(ur.room))
                present = False
        joined.update(u for u, was in first.items() if was)
        if present:
            seen |= joined
        for change in changes:
            if change.stream > upto:
                break  # later events only served to rebuild the membership at `since`
            if change.membership != "join":
                joined.discard(change.user)
                if change.user == user_id:
                    present = False
            elif change.user not in joined:
                joined.add(change.user)
                if change.user == user_id:
                    present = True
                    seen |= joined
                    newly |= joined
                elif present:
                    seen.add(change.user)
                    newly.add(change.user)
        return _Replayed(ur.room, present, joined, complete, set(first))

    def _member_changes(self, room: int, since: int) -> list[_MemberChange]:
        """The member events of a room's live timeline after `since`, in order."""
        queries = self.queries

        def was_joined(before: int, user: str) -> Callable[[], bool]:
            def answer() -> bool:
                prior = queries.state_event_at(before, MEMBER, user)
                return prior is not None and prior.membership == "join"

            return answer

        return [
            _MemberChange(c.user_id, c.membership, c.stream, was_joined(c.state_before, c.user_id))
            for c in self.timeline.membership_changes(room, since)
        ]
