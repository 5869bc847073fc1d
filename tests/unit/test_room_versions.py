from __future__ import annotations

import subprocess
import sys

import pytest

from homeserver.protocol.errors import UnknownRoomVersion
from homeserver.protocol.room_versions import (
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    StateResAlgorithm,
    get_room_version,
    is_valid_room_version_id,
)

from .vectors import load

SPEC = load("room_versions.json")
FEATURE_FLAGS = {
    "Knocking": "knock_join_rule",
    "Restricted join rules": "restricted_join_rule",
    "knock_restricted join rule": "knock_restricted_join_rule",
    "Additional room creators": "privileged_creators",
}


def test_all_stable_versions_are_known() -> None:
    assert list(KNOWN_ROOM_VERSIONS) == SPEC["stable_room_versions"]


@pytest.mark.parametrize("feature", sorted(FEATURE_FLAGS))
def test_feature_matrix_matches_spec(feature: str) -> None:
    for version, enabled in SPEC["feature_matrix"][feature].items():
        assert getattr(get_room_version(version), FEATURE_FLAGS[feature]) is enabled, (feature, version)


def test_event_id_formats_and_state_res() -> None:
    assert get_room_version("1").state_res is StateResAlgorithm.V1
    assert {get_room_version(str(v)).state_res for v in range(2, 12)} == {StateResAlgorithm.V2}
    assert get_room_version("12").state_res is StateResAlgorithm.V2_1
    assert get_room_version("2").event_format is EventFormat.V1
    assert get_room_version("3").event_format is EventFormat.V2
    assert get_room_version("4").urlsafe_event_ids and not get_room_version("3").urlsafe_event_ids


@pytest.mark.parametrize("bad", ["13", "", "1.0", None, 1])
def test_unknown_versions(bad: object) -> None:
    with pytest.raises(UnknownRoomVersion):
        get_room_version(bad)


def test_room_version_grammar() -> None:
    assert is_valid_room_version_id("org.example.my-version.1")
    assert not is_valid_room_version_id("Upper")
    assert not is_valid_room_version_id("x" * 33)
    assert not is_valid_room_version_id("")


def test_cli_help_and_room_versions() -> None:
    out = subprocess.run([sys.executable, "-m", "homeserver", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Matrix homeserver" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "homeserver", "room-versions"], capture_output=True, text=True, check=True
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 13 and lines[-1].startswith("12") and "v2.1" in lines[-1]
