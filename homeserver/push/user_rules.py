"""Each user's push rules as the API and the evaluator see them (spec: modules/push.md "Push Rules:
API", `m.push_rules`): the stored record (user rules and changes to the defaults), the ruleset built
from it, and the same compiled for evaluation. Editing a rule is a function of the record
(`homeserver/push/rules.py`); this module stores the result and drops what was built from the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.locks import KeyedLock, KeyedLocks
from homeserver.notifier import Notifier
from homeserver.push import rules as push_rules
from homeserver.push.evaluator import CompiledRuleset
from storage.cache import CacheRegistry, LruCache
from storage.engine import Batch, Store
from storage.push import PushStore


class PushRules:
    def __init__(self, store: Store, push: PushStore, notifier: Notifier, caches: CacheRegistry) -> None:
        self.store = store
        self.push = push
        self.notifier = notifier
        # the budget's "push" share, split by how many entries each kind needs (storage/cache.py)
        self._rulesets: LruCache[str, dict[str, list[dict[str, Any]]]] = caches.lru("push.rulesets", "push", part=0.1)
        self._compiled: LruCache[str, CompiledRuleset] = caches.lru("push.compiled_rules", "push", part=0.15)
        self._default = CompiledRuleset(push_rules.ruleset(None, None), push_rules.USER_ID)
        self._locks: KeyedLocks[str] = KeyedLocks()
        self.change_listeners: list[Callable[[str], None]] = []  # told the user id after their rules changed

    def record(self, user_id: str) -> dict[str, Any]:
        return self.push.rules(user_id) or {**push_rules.empty_record(), "stream": 0}

    def ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        found = self._rulesets.get(user_id)
        if found is None:
            found = push_rules.ruleset(self.push.rules(user_id), user_id)
            self._rulesets.put(user_id, found)
        return found

    def compiled(self, user_id: str) -> CompiledRuleset:
        """The user's rules ready for evaluation (one shared object for everyone on the defaults)."""
        found = self._compiled.get(user_id)
        if found is None:
            record = self.push.rules(user_id)
            found = self._default
            if record is not None:
                found = CompiledRuleset(push_rules.ruleset(record, None), push_rules.USER_ID)
            self._compiled.put(user_id, found)
        return found

    def rules_stream(self, user_id: str) -> int:
        record = self.push.rules(user_id)
        return int(record.get("stream", 0)) if record else 0

    def push_rules_event(self, user_id: str) -> dict[str, Any]:
        """spec: m.push_rules — the account data event carrying the user's whole ruleset."""
        return {"type": "m.push_rules", "content": {"global": self.ruleset(user_id)}}

    async def change_rules(self, user_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        async with self._locks(user_id):
            record = change(self.record(user_id))
            batch = self.store.batch()
            with batch:
                self._stage(user_id, record, batch)
                await batch.commit()
        self.notifier.notify(users=(user_id,))

    def _stage(self, user_id: str, record: dict[str, Any], batch: Batch) -> None:
        """Write the user's new record in `batch`; what was built from the old one goes once it lands."""
        record["stream"] = batch.next_count()
        self.push.put_rules(user_id, record, batch)

        def published() -> None:
            self._rulesets.discard(user_id)
            self._compiled.discard(user_id)
            for listener in self.change_listeners:
                listener(user_id)

        batch.on_commit.append(published)

    # -- room upgrades: the user's rules follow them to the replacement room -------------------

    def settings_lock(self, user_id: str) -> KeyedLock[str]:
        """Held by whoever stages a change of the user's rules in a batch of their own, until it lands."""
        return self._locks(user_id)

    def copy_room_settings(self, user_id: str, old_room_id: str, new_room_id: str, batch: Batch) -> None:
        """Stage copies of the user's rules about the old room for the new one (`settings_lock` held)."""
        record = push_rules.copy_room_rules(self.record(user_id), old_room_id, new_room_id)
        if record is not None:
            self._stage(user_id, record, batch)
            batch.on_commit.append(lambda: self.notifier.notify(users=(user_id,)))
