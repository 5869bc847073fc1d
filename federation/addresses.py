"""Which addresses outbound federation may connect to: the policy shared with push delivery."""

from __future__ import annotations

from homeserver.protocol.addresses import AddressPolicy

__all__ = ["AddressPolicy"]
