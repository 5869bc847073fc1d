"""The tables of the sync-side services (account data, receipts, push, filters, presence), listed
together so `storage/database.py` registers them with one line."""

from __future__ import annotations

from storage import account_data, filters, presence, push, receipts
from storage.engine import Table

TABLES: tuple[Table, ...] = (
    *account_data.TABLES,
    *receipts.TABLES,
    *push.TABLES,
    *filters.TABLES,
    *presence.TABLES,
)
