"""A logged-in user as the tests hold one: its ids and access token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class User:
    user_id: str
    device_id: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}
