"""Each user's push rules as the API and the evaluator see them (spec: modules/push.md "Push Rules:
API", `m.push_rules`): the stored record (user rules and changes to the defaults), the ruleset built
from it, and the same compiled for evaluation. Editing a rule is a function of the record
(`homeserver/push/rules.py`); this module stores the result and drops what was built from the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.locks import KeyedLocks
from homeserver.notifier import Notifier
from homeserver.push import rules as push_rules
from homeserver.push.evaluator import CompiledRuleset
from storage.cache import CacheRegistry, LruCache
from storage.engine import Store
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
                record["stream"] = batch.next_count()
                self.push.put_rules(user_id, record, batch)
                await batch.commit()
            self._rulesets.discard(user_id)
            self._compiled.discard(user_id)
            for listener in self.change_listeners:
                listener(user_id)
        self.notifier.notify(users=(user_id,))
