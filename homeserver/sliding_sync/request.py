"""The request body of simplified sliding sync, in the shape clients send (Synapse's
`SlidingSyncBody`; MSC4186). Unknown keys and extensions are ignored, as the MSC asks."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from homeserver.validation import STRICT

MAX_LISTS = 100
MAX_TIMELINE_LIMIT = 1000

Pair = Annotated[list[str], Field(min_length=2, max_length=2)]
Range = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]


class Filters(BaseModel):
    """All given filters apply (AND); an absent one does not filter."""

    model_config = STRICT
    is_dm: bool | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    room_types: list[str | None] | None = None
    not_room_types: list[str | None] | None = None
    tags: list[str] | None = None
    not_tags: list[str] | None = None
    spaces: list[str] | None = None  # accepted; not applied (Synapse ignores it too)
    room_name_like: str | None = None  # accepted; not applied


class RoomParams(BaseModel):
    model_config = STRICT
    required_state: list[Pair] = []
    timeline_limit: Annotated[int, Field(ge=0, le=MAX_TIMELINE_LIMIT)] = 0


class ListParams(RoomParams):
    ranges: list[Range] | None = None
    range: Range | None = None  # the MSC's newer spelling: one range
    filters: Filters | None = None

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, ranges: list[list[int]] | None) -> list[list[int]] | None:
        for start, end in ranges or ():
            if start > end:
                raise ValueError("each range must be [start, end] with start <= end")
        return ranges

    @field_validator("range")
    @classmethod
    def _one_ordered(cls, one: list[int] | None) -> list[int] | None:
        if one is not None and one[0] > one[1]:
            raise ValueError("the range must be [start, end] with start <= end")
        return one

    def windows(self) -> list[list[int]]:
        """The ranges asked for, in either spelling."""
        return [*(self.ranges or ()), *([self.range] if self.range is not None else [])]


class ToDeviceExtension(BaseModel):
    model_config = STRICT
    enabled: bool | None = False
    limit: Annotated[int, Field(ge=0)] = 100
    since: str | None = None

    @field_validator("since")
    @classmethod
    def _numeric(cls, since: str | None) -> str | None:
        if since is not None and not since.isdigit():
            raise ValueError("must be the next_batch of an earlier response")
        return since


class E2eeExtension(BaseModel):
    model_config = STRICT
    enabled: bool | None = False


class ScopedExtension(BaseModel):
    """An extension about rooms: `lists` and `rooms` say which of the response's rooms ("*": all)."""

    model_config = STRICT
    enabled: bool | None = False
    lists: list[str] | None = ["*"]
    rooms: list[str] | None = ["*"]


class Extensions(BaseModel):
    model_config = STRICT
    to_device: ToDeviceExtension | None = None
    e2ee: E2eeExtension | None = None
    account_data: ScopedExtension | None = None
    receipts: ScopedExtension | None = None
    typing: ScopedExtension | None = None


class SlidingSyncBody(BaseModel):
    model_config = STRICT
    conn_id: str | None = None
    lists: dict[Annotated[str, Field(max_length=64)], ListParams] | None = None
    room_subscriptions: dict[str, RoomParams] | None = None
    extensions: Extensions | None = None

    @field_validator("lists")
    @classmethod
    def _few_lists(cls, lists: dict[str, ListParams] | None) -> dict[str, ListParams] | None:
        if lists is not None and len(lists) > MAX_LISTS:
            raise ValueError(f"at most {MAX_LISTS} lists")
        return lists
