from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.check import check_consistency
from tests.rooms.remote import Local


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    """A local server on a fresh store; every test ends with the store's consistency check."""
    server = Local(tmp_path / "db")
    try:
        yield server
        assert check_consistency(server.db, full=True) == []
    finally:
        server.close()
