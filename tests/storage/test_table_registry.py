"""Every table defined anywhere in `storage/` is registered, so `inspect` shows it, and no two
tables share a name (a shared prefix would mix their keys)."""

from __future__ import annotations

import importlib
import pkgutil

import storage
from storage.database import ALL_TABLES
from storage.engine import Table


def test_every_table_is_registered_once() -> None:
    defined: dict[str, Table] = {}
    for info in pkgutil.iter_modules(storage.__path__):
        module = importlib.import_module(f"storage.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Table):
                defined[value.name] = value
    names = [t.name for t in ALL_TABLES]
    assert len(names) == len(set(names)), "a table is registered twice"
    missing = sorted(set(defined) - set(names))
    assert not missing, f"tables not registered in storage/database.py: {missing}"
