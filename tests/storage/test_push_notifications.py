"""Notification rows: one per user, the record once per event, `/notifications` merged across rooms
newest first, and the upgrade of a schema 1 store (a copy of the record per user)."""

from __future__ import annotations

from pathlib import Path

import orjson

from storage import engine
from storage.codec import SEP, u64
from storage.engine import Store
from storage.push import NOTIFY_EVENT, NOTIFY_ROOM, NotificationGroup, PushStore

MESSAGE = ["notify"]
MENTION = ["notify", {"set_tweak": "highlight"}]


def notify(push: PushStore, store: Store, room: int, position: int, groups: list[NotificationGroup]) -> None:
    with store.batch() as b:
        push.add_notifications(f"!r{room}:hs", room, position, 1000 + position, 5000 + position, "", groups, b)
        store.commit_now(b)


def test_one_record_per_event_and_one_row_per_user(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        push = PushStore(store)
        notify(
            push,
            store,
            1,
            10,
            [NotificationGroup(MESSAGE, False, ["@a:hs", "@b:hs"]), NotificationGroup(MENTION, True, ["@c:hs"])],
        )
        assert store.count(NOTIFY_EVENT) == 1
        assert store.count(NOTIFY_ROOM) == 3
        assert [(u.position, u.highlight) for u in push.unread("@b:hs", 1, 0)] == [(10, False)]
        assert [(u.position, u.highlight) for u in push.unread("@c:hs", 1, 0)] == [(10, True)]
        assert list(push.unread("@c:hs", 1, 10)) == []
        (position, record), *_ = push.notifications("@c:hs")
        assert position == 10
        assert record["actions"] == MENTION and record["highlight"] is True
        assert record["room_id"] == "!r1:hs" and record["event"] == 1010 and record["ts"] == 5010
        assert next(push.notifications("@a:hs"))[1]["actions"] == MESSAGE


def test_notifications_merge_rooms_newest_first(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        push = PushStore(store)
        for room, position in [(1, 3), (2, 5), (1, 7), (3, 8), (2, 9), (1, 12)]:
            notify(push, store, room, position, [NotificationGroup(MESSAGE, False, ["@u:hs"])])
        notify(push, store, 2, 20, [NotificationGroup(MESSAGE, False, ["@someone.else:hs"])])
        assert [p for p, _ in push.notifications("@u:hs")] == [12, 9, 8, 7, 5, 3]
        assert [(p, r["room"]) for p, r in push.notifications("@u:hs", before=9)] == [(8, 3), (7, 1), (5, 2), (3, 1)]
        assert list(push.notifications("@nobody:hs")) == []


def test_schema_1_store_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Store(path) as store:  # made at the current schema, then turned into a schema 1 store
        old_user_table = b"notify_user" + SEP
        with store.db.write_batch() as wb:
            wb.put(engine.META.prefix + b"schema_version", u64(1))
            for user, room, position, actions, highlight in [
                ("@a:hs", 1, 10, MESSAGE, False),
                ("@b:hs", 1, 10, MENTION, True),
                ("@a:hs", 2, 11, MESSAGE, False),
            ]:
                record = {
                    "room_id": f"!r{room}:hs",
                    "event": 100 + position,
                    "actions": actions,
                    "ts": 7,
                    "highlight": highlight,
                    "thread": "",
                    "position": position,
                    "room": room,
                }
                wb.put(old_user_table + user.encode() + SEP + u64(position), orjson.dumps(record))
                flags = b"\x01" if highlight else b"\x00"
                wb.put(NOTIFY_ROOM.prefix + user.encode() + SEP + u64(room) + u64(position), flags)
    with Store(path) as store:
        assert store.schema_version == engine.SCHEMA_VERSION
        assert not any(True for _ in store.db.iterator(prefix=b"notify_user" + SEP))
        assert store.count(NOTIFY_EVENT) == 2
        push = PushStore(store)
        assert [(p, r["actions"], r["room_id"]) for p, r in push.notifications("@a:hs")] == [
            (11, MESSAGE, "!r2:hs"),
            (10, MESSAGE, "!r1:hs"),
        ]
        ((position, record),) = push.notifications("@b:hs")
        assert (position, record["actions"], record["highlight"], record["event"]) == (10, MENTION, True, 110)
        assert [(u.position, u.highlight) for u in push.unread("@b:hs", 1, 0)] == [(10, True)]


def test_rows_keep_their_layout_for_users_seen_before_and_new(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        push = PushStore(store)
        notify(push, store, 1, 10, [NotificationGroup(MESSAGE, False, ["@a:hs", "@b:hs"])])
        # a later event: known users, then new ones within a group (their key prefixes learned mid-way)
        groups = [NotificationGroup(MENTION, True, ["@b:hs", "@new:hs"]), NotificationGroup(MESSAGE, False, ["@a:hs"])]
        with store.batch() as b:
            push.add_notifications("!r2:hs", 2, 11, 1011, 5011, "$root", groups, b)
            keys = [k for k, _ in b.ops if k.startswith(NOTIFY_ROOM.prefix)]
            users = ("@b:hs", "@new:hs", "@a:hs")
            assert keys == [NOTIFY_ROOM.prefix + u.encode() + SEP + u64(2) + u64(11) for u in users]
            store.commit_now(b)
        assert [(u.position, u.thread_id, u.highlight) for u in push.unread("@new:hs", 2, 0)] == [(11, "$root", True)]
        assert [(u.position, u.highlight) for u in push.unread("@a:hs", 2, 0)] == [(11, False)]
        (position, record), *_ = push.notifications("@a:hs")
        assert (position, record["actions"], record["room_id"], record["thread"]) == (11, MESSAGE, "!r2:hs", "$root")
