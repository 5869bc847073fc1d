"""Events as light objects: a read-only view over the canonical dict.

The dict stays the event (its canonical bytes, hashes and signatures are computed from it and
nothing here changes them). `Event` answers the questions code asks of every event without each
caller re-checking JSON types: `.content` is always a dict, `.state_key` is a str or None, `.type`
and `.sender` are str ("" when the event lacks them; the format checks at the door refuse such
events, so "" only shows up for malformed stored data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

_EMPTY: Mapping[str, Any] = {}


@final
class Event:
    __slots__ = ("_event_id", "raw")

    def __init__(self, raw: Mapping[str, Any], event_id: str | None = None) -> None:
        self.raw = raw
        self._event_id = event_id

    @classmethod
    def wrap(cls, raw: Mapping[str, Any] | None, event_id: str | None = None) -> Event | None:
        return cls(raw, event_id) if raw is not None else None

    @property
    def type(self) -> str:
        t = self.raw.get("type")
        return t if isinstance(t, str) else ""

    @property
    def state_key(self) -> str | None:
        sk = self.raw.get("state_key")
        return sk if isinstance(sk, str) else None

    @property
    def is_state(self) -> bool:
        return isinstance(self.raw.get("state_key"), str)

    @property
    def content(self) -> Mapping[str, Any]:
        c = self.raw.get("content")
        # `type(...) is dict` first: the ABC check behind isinstance(x, Mapping) is slow on hot paths
        return c if type(c) is dict or isinstance(c, Mapping) else _EMPTY

    @property
    def sender(self) -> str:
        s = self.raw.get("sender")
        return s if isinstance(s, str) else ""

    @property
    def room_id(self) -> str:
        r = self.raw.get("room_id")
        return r if isinstance(r, str) else ""

    @property
    def event_id(self) -> str | None:
        """Given at construction (room versions 3+ derive it from the hash), else the v1/v2 field."""
        if self._event_id is not None:
            return self._event_id
        e = self.raw.get("event_id")
        return e if isinstance(e, str) else None

    @property
    def origin_server_ts(self) -> int:
        ts = self.raw.get("origin_server_ts")
        return ts if isinstance(ts, int) and not isinstance(ts, bool) else 0

    @property
    def membership(self) -> str | None:
        """`content.membership` of a member event (any str), else None."""
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level key of the event dict."""
        return self.raw.get(key, default)

    def __repr__(self) -> str:
        return f"Event({self.type!r}, {self.state_key!r}, {self.event_id!r})"


def content_of(event: Mapping[str, Any] | Event | None) -> Mapping[str, Any]:
    """The content of an event that may be absent (a state event the room does not have), as
    `Event.content`: a mapping, empty when the event has none or a malformed one."""
    # `Event.get` reads its dict: one path for both, as cheap as it gets for dicts (the auth rules
    # call this for every event they check); `type(...) is dict` first: the ABC check is slow
    c = event.get("content") if event is not None else None
    return c if type(c) is dict or isinstance(c, Mapping) else _EMPTY
