"""`python -m homeserver inspect`: read the store as easily as a SQL database.

The store is opened read-only from a snapshot copy (see `storage.engine.open_snapshot_copy`), so it
works while the server runs. Every table's keys and values are decoded by their declared layout;
short ids are shown with the names they stand for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from homeserver.rooms.tokens import relative_order, stream_of
from storage.check import check_consistency
from storage.codec import SEP, read_u64
from storage.database import ALL_TABLES, Database
from storage.engine import Table
from storage.events import (
    BACKFILLED,
    OUTLIER,
    REDACTED,
    REJECTED,
    SOFT_FAILED,
    STATE,
    EventMeta,
)
from storage.push import read_notify_value
from storage.rooms import MEMBERSHIPS
from storage.state_snapshots import _Record

_FLAG_NAMES = {
    OUTLIER: "outlier",
    REJECTED: "rejected",
    SOFT_FAILED: "soft-failed",
    REDACTED: "redacted",
    STATE: "state",
    BACKFILLED: "backfilled",
}
_FIXED = {"u64", "room", "event", "statekey", "snapshot", "order"}
TABLES_BY_NAME = {t.name: t for t in ALL_TABLES}


class Decoder:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _short(self, kind: str, n: int) -> Any:
        try:
            if kind == "room":
                return {"short": n, "room_id": self.db.ids.room_id(n)}
            if kind == "event":
                return {"short": n, "event_id": self.db.ids.event_id(n)}
            if kind == "statekey":
                t, sk = self.db.ids.state_key_of(n)
                return {"short": n, "type": t, "state_key": sk}
        except KeyError:
            return {"short": n, "unknown": True}
        if kind == "order":
            return {"order": relative_order(n), "live": stream_of(n) is not None}
        return n

    def key(self, table: Table, key: bytes) -> list[Any]:
        parts: list[Any] = []
        rest = key
        kinds = table.key_parts
        for i, kind in enumerate(kinds):
            if kind in _FIXED:
                parts.append(self._short(kind, read_u64(rest[:8])))
                rest = rest[8:]
            else:
                last = i == len(kinds) - 1
                raw, _, rest = (rest, b"", b"") if last else rest.partition(SEP)
                parts.append(raw.decode("utf-8", "replace") if kind == "str" else raw.hex())
        return parts

    def value(self, table: Table, value: bytes) -> Any:
        kind = table.value
        if kind == "json":
            decoded = orjson.loads(value)
            if table.name == "accounts" and isinstance(decoded, dict) and decoded.get("password_hash"):
                decoded["password_hash"] = "(argon2id hash hidden)"
            return decoded
        if kind == "empty":
            return None
        if kind == "str":
            return value.decode("utf-8", "replace").replace("\xff", "|")
        if kind in _FIXED:
            return self._short(kind, read_u64(value))
        if kind == "event*":
            return [self._short("event", read_u64(value, i)) for i in range(0, len(value), 8)]
        if kind == "event_meta":
            return self.meta(EventMeta.decode(value))
        if kind == "snapshot":
            rec = _Record.decode(value)
            return {
                "parent": rec.parent,
                "layer": rec.layer,
                "added": len(rec.added),
                "removed": len(rec.removed),
                "hash": f"{rec.hash:064x}"[:16],
            }
        if kind == "user_room":
            m, stream, event = value[0], read_u64(value, 1), read_u64(value, 9)
            return {"membership": MEMBERSHIPS[m], "stream": stream, "event": self._short("event", event)}
        if kind == "notify_count":
            highlight, group, thread = read_notify_value(value)
            return {"highlight": highlight, "group": group, "thread": thread}
        if kind == "meta":
            return read_u64(value) if len(value) == 8 else value.decode("utf-8", "replace")
        return value.hex()

    def meta(self, meta: EventMeta) -> dict[str, Any]:
        return {
            "room": self._short("room", meta.room),
            "stream": meta.stream,
            "depth": meta.depth,
            "state_before": meta.state_before,
            "state_after": meta.state_after,
            "state_key": self._short("statekey", meta.state_key) if meta.state_key else None,
            "flags": [name for bit, name in _FLAG_NAMES.items() if meta.flags & bit],
        }


def _mask(token_hash: bytes) -> str:
    """Tokens are stored as SHA-256 hashes; show only enough of one to tell tokens apart."""
    return f"sha256:{token_hash.hex()[:8]}…"


def _table_stats(db: Database) -> list[dict[str, Any]]:
    rows = []
    for t in ALL_TABLES:
        keys = 0
        size = 0
        for k, v in db.store.iterate(t):
            keys += 1
            size += len(k) + len(v) + len(t.prefix)
        rows.append({"table": t.name, "keys": keys, "bytes": size, "description": t.description})
    return rows


def _room_short(db: Database, room_id: str) -> int:
    short = db.ids.room(room_id)
    if short is None or db.rooms.info(short) is None:
        raise SystemExit(f"no room {room_id} in this store")
    return short


def _state(db: Database, snapshot: int) -> list[dict[str, Any]]:
    rows = []
    for sk, ev in sorted(db.snapshots.load(snapshot).items()) if snapshot else []:
        t, key = db.ids.state_key_of(sk)
        event = db.events.get_json(ev) or {}
        rows.append({"type": t, "state_key": key, "event_id": db.ids.event_id(ev), "content": event.get("content")})
    return rows


def _event_rows(db: Database, room: int) -> Iterator[dict[str, Any]]:
    for _, short in db.rooms.timeline(room):
        event = db.events.get_json(short)
        if event is not None:
            yield {"event_id": db.ids.event_id(short), **event}


class Output:
    def __init__(self, as_json: bool, out: IO[str]) -> None:
        self.as_json = as_json
        self.out = out

    def emit(self, data: Any, text: Callable[[], str]) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        else:
            self.out.write(text() + "\n")


def _table_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))
    return "\n".join(lines)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# One function a sub-command: (the store, its decoder, where to write, the parsed arguments) -> exit status
Command = Callable[[Database, Decoder, Output, argparse.Namespace], int]


def _tables(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    rows = _table_stats(db)
    for r in rows:
        r["size"] = _human_size(r["bytes"])
    out.emit(rows, lambda: _table_text(rows, ["table", "keys", "size", "description"]))
    return 0


def _scan(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    table = TABLES_BY_NAME.get(args.table)
    if table is None:
        raise SystemExit(f"no table {args.table!r}; tables: {', '.join(TABLES_BY_NAME)}")
    rows = []
    for k, v in db.store.iterate(table):
        rows.append({"key": dec.key(table, k), "value": dec.value(table, v)})
        if len(rows) >= args.limit:
            break
    out.emit(rows, lambda: "\n".join(f"{json.dumps(r['key'])} = {json.dumps(r['value'])}" for r in rows))
    return 0


def _key(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    try:
        raw = bytes.fromhex(args.key) if args.hex else args.key.encode().decode("unicode_escape").encode("latin-1")
    except ValueError as e:  # bad hex, a bad escape, or a character beyond \xff
        raise SystemExit(f"error: cannot read the key {args.key!r}: {e}") from None
    table_name, _, rest = raw.partition(SEP)
    table = TABLES_BY_NAME.get(table_name.decode("utf-8", "replace"))
    if table is None:
        raise SystemExit(f"the key does not start with a table name: {raw!r}")
    found = db.store.get(table, rest)
    data = {
        "table": table.name,
        "key": dec.key(table, rest),
        "value": dec.value(table, found) if found is not None else None,
    }
    out.emit(data, lambda: json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def _event(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    short = db.ids.event(args.event_id)
    meta = db.events.get_meta(short) if short is not None else None
    if short is None or meta is None:
        raise SystemExit(f"no event {args.event_id} in this store")
    data = {
        "event_id": args.event_id,
        "short": short,
        "meta": dec.meta(meta),
        "rejection": db.events.rejection_reason(short),
        "event": db.events.get_json(short),
    }
    out.emit(data, lambda: json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def _rooms(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    rows = []
    for room in db.rooms.rooms():
        info = db.rooms.info(room) or {}
        rows.append(
            {
                "room_id": db.ids.room_id(room),
                "version": info.get("version"),
                "joined": db.rooms.member_count(room, "join"),
                "state_events": len(db.snapshots.load(info["state"])) if info.get("state") else 0,
                "extremities": len(db.rooms.extremities(room)),
            }
        )
    out.emit(rows, lambda: _table_text(rows, ["room_id", "version", "joined", "state_events", "extremities"]))
    return 0


def _room_state(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    room = _room_short(db, args.room_id)
    if args.at:
        short = db.ids.event(args.at)
        meta = db.events.get_meta(short) if short is not None else None
        if meta is None:
            raise SystemExit(f"no event {args.at} in this store")
        snapshot = meta.state_after if args.after else meta.state_before
    else:
        snapshot = int((db.rooms.info(room) or {}).get("state", 0))
    rows = _state(db, snapshot)
    for r in rows:
        r["content_text"] = json.dumps(r["content"], ensure_ascii=False)[:60]
    out.emit(
        [{k: v for k, v in r.items() if k != "content_text"} for r in rows],
        lambda: _table_text(rows, ["type", "state_key", "event_id", "content_text"]),
    )
    return 0


def _members(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    room = _room_short(db, args.room_id)
    memberships = [args.membership] if args.membership else list(MEMBERSHIPS)
    rows = [
        {"user_id": user, "membership": m, "event_id": db.ids.event_id(ev)}
        for m in memberships
        for user, ev in db.rooms.members(room, m)
    ]
    out.emit(rows, lambda: _table_text(rows, ["user_id", "membership", "event_id"]))
    return 0


def _user_devices(db: Database, user_id: str) -> list[dict[str, Any]]:
    devices = []
    for device_id, device in db.accounts.devices(user_id):
        tokens = []
        for h in db.accounts.device_token_hashes(user_id, device_id):
            kind = "access" if db.accounts.access_token(h) is not None else "refresh"
            info = db.accounts.access_token(h) or db.accounts.refresh_token(h) or {}
            tokens.append({"kind": kind, "token": _mask(h), "expires_at": info.get("expires_at")})
        devices.append({"device_id": device_id, **device, "tokens": tokens})
    return devices


def _user(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    rows = [
        {
            "room_id": db.ids.room_id(ur.room),
            "membership": ur.membership,
            "stream": ur.stream,
            "event_id": db.ids.event_id(ur.event),
        }
        for ur in db.rooms.user_rooms(args.user_id)
    ]
    account = db.accounts.account(args.user_id)
    if account is None and not rows:
        raise SystemExit(f"no user {args.user_id} in this store")
    account_view = {k: v for k, v in (account or {}).items() if k != "password_hash"}
    if account and account.get("password_hash"):
        account_view["password"] = "set (argon2id hash hidden)"
    devices = _user_devices(db, args.user_id)
    data = {"user_id": args.user_id, "account": account_view, "devices": devices, "rooms": rows}

    def user_text() -> str:
        lines = [args.user_id, ""]
        lines += [f"  {k}: {v}" for k, v in account_view.items()]
        device_rows = [
            {
                "device_id": d["device_id"],
                "display_name": d.get("display_name") or "",
                "last_seen_ip": d.get("last_seen_ip") or "",
                "tokens": ", ".join(f"{t['kind']} {t['token']}" for t in d["tokens"]),
            }
            for d in devices
        ]
        lines += ["", "devices:", _table_text(device_rows, ["device_id", "display_name", "last_seen_ip", "tokens"])]
        lines += ["", "rooms:", _table_text(rows, ["room_id", "membership", "stream"])]
        return "\n".join(lines)

    out.emit(data, user_text)
    return 0


def _export(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    target = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    try:
        if args.room:
            for row in _event_rows(db, _room_short(db, args.room)):
                target.write(orjson.dumps(row).decode() + "\n")
        else:
            for table in ALL_TABLES:
                for k, v in db.store.iterate(table):
                    row = {"table": table.name, "key": dec.key(table, k), "value": dec.value(table, v)}
                    target.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if target is not sys.stdout:
            target.close()
    return 0


def _verify(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    n = db.store.verify()
    out.emit({"keys": n, "ok": True}, lambda: f"ok: {n} keys, every block checksum verified")
    return 0


def _check(db: Database, dec: Decoder, out: Output, args: argparse.Namespace) -> int:
    problems = check_consistency(db, full=args.full)
    summary = {t: db.store.count(TABLES_BY_NAME[t]) for t in ("event_meta", "room_info", "state_snapshot")}
    out.emit(
        {"ok": not problems, "problems": problems, "counts": summary},
        lambda: (
            "\n".join(problems)
            if problems
            else (
                f"ok: {summary['event_meta']} events in {summary['room_info']} rooms, "
                f"{summary['state_snapshot']} state snapshots; every index agrees with the events"
            )
        ),
    )
    return 1 if problems else 0


COMMANDS: dict[str, Command] = {
    "tables": _tables,
    "scan": _scan,
    "key": _key,
    "event": _event,
    "rooms": _rooms,
    "state": _room_state,
    "members": _members,
    "user": _user,
    "export": _export,
    "verify": _verify,
    "check": _check,
}


def run(args: argparse.Namespace) -> int:
    command = COMMANDS.get(args.inspect_command)
    if command is None:
        raise SystemExit(f"unknown inspect command {args.inspect_command!r}")
    with Database.open_read_only(Path(args.data_dir) / "db") as db:
        return command(db, Decoder(db), Output(args.json, sys.stdout), args)
