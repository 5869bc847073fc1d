"""What a pusher is owed, in the store: the user's notification rows after its position, merged
across rooms (`PushStore.notified_after`), and the upgrade of a store whose pushers were owed through
`push_outbox` rows, which keeps what each pusher was owed and owes it nothing older."""

from __future__ import annotations

from pathlib import Path

from storage.codec import SEP, u64
from storage.engine import Store
from storage.push import PUSH_OUTBOX, NotificationGroup, PushStore

BOB, CAROL = "@bob:hs", "@carol:hs"


def notify(push: PushStore, store: Store, room: int, position: int, users: list[str]) -> None:
    with store.batch() as b:
        push.add_notifications(
            f"!r{room}:hs", room, position, position, 0, "", [NotificationGroup(["notify"], False, users)], b
        )
        store.commit_now(b)


def test_notified_after_merges_rooms_in_order(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        push = PushStore(store)
        for room, position, users in [
            (2, 3, [BOB]),
            (1, 4, [BOB, CAROL]),
            (2, 7, [CAROL]),
            (3, 8, [BOB]),
            (1, 9, [BOB]),
        ]:
            notify(push, store, room, position, users)
        assert push.notified_after(BOB, 0, 100, 100) == [(3, 2), (4, 1), (8, 3), (9, 1)]
        assert push.notified_after(BOB, 3, 8, 100) == [(4, 1), (8, 3)]  # after 3, up to 8
        assert push.notified_after(BOB, 0, 100, 2) == [(3, 2), (4, 1)]
        assert push.notified_after(CAROL, 4, 100, 100) == [(7, 2)]
        assert push.notified_after("@nobody:hs", 0, 100, 100) == []


def put_pusher(store: Store, push: PushStore, user: str, pushkey: str, kind: str = "http") -> None:
    with store.batch() as b:
        push.put_pusher(user, {"app_id": "app", "pushkey": pushkey, "kind": kind, "data": {}}, b)
        store.commit_now(b)


def test_outbox_of_an_older_store_becomes_positions(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        push = PushStore(store)
        for position in (3, 5, 8):
            notify(push, store, 1, position, [BOB, CAROL])
        put_pusher(store, push, BOB, "behind")  # took 3; owed 5 and 8
        put_pusher(store, push, BOB, "caught-up")  # took 8
        put_pusher(store, push, CAROL, "never-owed")  # set after 8: owed nothing yet, position 0 then
        put_pusher(store, push, CAROL, "mail", kind="email")
        with store.batch() as b:
            push.set_pusher_position(BOB, "app", "behind", 3, b)
            push.set_pusher_position(BOB, "app", "caught-up", 8, b)
            for position in (5, 8):  # what the older store wrote with each event for bob's pushers
                b.put(PUSH_OUTBOX, BOB.encode() + SEP + u64(position), u64(1))
            store.commit_now(b)
        push.settle_positions(high=20)
        assert store.count(PUSH_OUTBOX) == 0
        assert push.pusher_position(BOB, "app", "behind") == 4  # owed from 5 on, as before
        assert push.notified_after(BOB, 4, 20, 10) == [(5, 1), (8, 1)]
        assert push.pusher_position(BOB, "app", "caught-up") == 20
        assert push.pusher_position(CAROL, "app", "never-owed") == 20  # not the older notifications
        assert push.pusher_position(CAROL, "app", "mail") == 0  # email pushers are not sent to
        # once settled, later starts move no pusher (the stored positions are what is owed)
        push.settle_positions(high=30)
        assert [push.pusher_position(BOB, "app", k) for k in ("behind", "caught-up")] == [4, 20]
        assert push.pusher_position(CAROL, "app", "never-owed") == 20
