"""Server-side key backups (spec: modules/end_to_end_encryption.md "Server-side key backups" and
the room_keys API): versions with auth_data and an etag; session keys stored per room and session
with the spec's replacement rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.errors import MatrixError
from homeserver.rooms.tokens import parse_counter
from storage.engine import Store
from storage.key_backup import KeyBackupStore


def _better(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """spec: keep the verified key; then the lower first_message_index; then the lower forwarded_count."""
    if bool(new.get("is_verified")) != bool(old.get("is_verified")):
        return bool(new.get("is_verified"))
    if new.get("first_message_index") != old.get("first_message_index"):
        return int(new.get("first_message_index", 0)) < int(old.get("first_message_index", 0))
    return int(new.get("forwarded_count", 0)) < int(old.get("forwarded_count", 0))


def _check_session(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", "a session key must be an object")
    for field, kind in (("first_message_index", int), ("forwarded_count", int), ("is_verified", bool)):
        value = data.get(field)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            expected = "an integer" if kind is int else "a boolean"
            raise MatrixError(400, "M_BAD_JSON", f"session key {field} must be {expected}")
    if not isinstance(data.get("session_data"), dict):
        raise MatrixError(400, "M_BAD_JSON", "session key session_data must be an object")
    return data


class KeyBackup:
    def __init__(self, store: Store, backups: KeyBackupStore) -> None:
        self.store = store
        self.backups = backups

    def _current(self, user_id: str) -> tuple[int, dict[str, Any]] | None:
        for version, info in self.backups.versions(user_id):
            if not info.get("deleted"):
                return version, info
        return None

    def _version(self, user_id: str, version: str | None) -> tuple[int, dict[str, Any]]:
        if version is None:
            found = self._current(user_id)
            if found is None:
                raise MatrixError(404, "M_NOT_FOUND", "no current backup version")
            return found
        number = parse_counter(version)
        info = self.backups.version(user_id, number) if number is not None else None
        if number is None or info is None or info.get("deleted"):
            raise MatrixError(404, "M_NOT_FOUND", f"unknown backup version {version}")
        return number, info

    def describe(self, user_id: str, version: str | None) -> dict[str, Any]:
        v, info = self._version(user_id, version)
        return {
            "algorithm": info["algorithm"],
            "auth_data": info["auth_data"],
            "version": str(v),
            "etag": str(info.get("etag", 0)),
            "count": self.backups.count_keys(user_id, v),
        }

    async def create(self, user_id: str, body: Mapping[str, Any]) -> str:
        algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
        if not isinstance(algorithm, str) or not isinstance(auth_data, dict):
            raise MatrixError(400, "M_BAD_JSON", "algorithm (string) and auth_data (object) are required")
        latest = next(self.backups.versions(user_id), None)
        version = (latest[0] if latest else 0) + 1
        batch = self.store.batch()
        with batch:
            self.backups.put_version(
                user_id, version, {"algorithm": algorithm, "auth_data": auth_data, "etag": 0}, batch
            )
            await batch.commit()
        return str(version)

    async def update(self, user_id: str, version: str, body: Mapping[str, Any]) -> None:
        v, info = self._version(user_id, version)
        if "version" in body and body["version"] != version:
            raise MatrixError(400, "M_INVALID_PARAM", "version in the body does not match the path")
        if body.get("algorithm") != info["algorithm"]:
            raise MatrixError(400, "M_INVALID_PARAM", "the algorithm of a backup cannot change")
        if not isinstance(body.get("auth_data"), dict):
            raise MatrixError(400, "M_BAD_JSON", "auth_data must be an object")
        batch = self.store.batch()
        with batch:
            self.backups.put_version(user_id, v, {**info, "auth_data": body["auth_data"]}, batch)
            await batch.commit()

    async def delete(self, user_id: str, version: str) -> None:
        number = parse_counter(version)
        info = self.backups.version(user_id, number) if number is not None else None
        if number is None or info is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown backup version {version}")
        if info.get("deleted"):
            return  # spec: DELETE /room_keys/version/{version} succeeds for a backup deleted before
        v = number
        batch = self.store.batch()
        with batch:
            self.backups.delete_keys(user_id, v, batch)
            self.backups.put_version(user_id, v, {**info, "deleted": True}, batch)
            await batch.commit()

    async def put_keys(
        self, user_id: str, version: str | None, rooms: Mapping[str, Any], room_id: str | None = None
    ) -> dict[str, Any]:
        if version is None:
            raise MatrixError(400, "M_MISSING_PARAM", "the version query parameter is required")
        current = self._current(user_id)
        if current is None:
            raise MatrixError(404, "M_NOT_FOUND", "there is no backup")
        if str(current[0]) != version:
            # spec: keys can only be written to the most recent backup version
            raise MatrixError(
                403,
                "M_WRONG_ROOM_KEYS_VERSION",
                "that is not the current backup version",
                current_version=str(current[0]),
            )
        v, info = current
        changed = False
        batch = self.store.batch()
        with batch:
            for rid, room in rooms.items():
                sessions = room.get("sessions") if isinstance(room, dict) else None
                if not isinstance(sessions, dict):
                    raise MatrixError(400, "M_BAD_JSON", f"rooms.{rid}.sessions must be an object")
                for session_id, data in sessions.items():
                    data = _check_session(data)
                    existing = next(iter(self.backups.keys(user_id, v, rid, session_id)), None)
                    if existing is None or _better(data, existing[2]):
                        self.backups.put_key(user_id, v, rid, session_id, data, batch)
                        changed = True
            if changed:
                info = {**info, "etag": int(info.get("etag", 0)) + 1}
                self.backups.put_version(user_id, v, info, batch)
            await batch.commit()
        return {"etag": str(info.get("etag", 0)), "count": self.backups.count_keys(user_id, v)}

    def get_keys(
        self, user_id: str, version: str | None, room_id: str | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        if version is None:
            raise MatrixError(400, "M_MISSING_PARAM", "the version query parameter is required")
        v, _ = self._version(user_id, version)
        rooms: dict[str, Any] = {}
        for rid, sid, data in self.backups.keys(user_id, v, room_id, session_id):
            rooms.setdefault(rid, {"sessions": {}})["sessions"][sid] = data
        if session_id is not None:
            if not rooms:
                raise MatrixError(404, "M_NOT_FOUND", "no key for that session")
            return dict(rooms[room_id or ""]["sessions"][session_id])
        if room_id is not None:
            return rooms.get(room_id, {"sessions": {}})  # type: ignore[no-any-return]
        return {"rooms": rooms}

    async def delete_keys(
        self, user_id: str, version: str | None, room_id: str | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        if version is None:
            raise MatrixError(400, "M_MISSING_PARAM", "the version query parameter is required")
        v, info = self._version(user_id, version)
        batch = self.store.batch()
        with batch:
            removed = self.backups.delete_keys(user_id, v, batch, room_id, session_id)
            if removed:
                info = {**info, "etag": int(info.get("etag", 0)) + 1}
                self.backups.put_version(user_id, v, info, batch)
            await batch.commit()
        return {"etag": str(info.get("etag", 0)), "count": self.backups.count_keys(user_id, v)}
