"""`inspect` has one function a sub-command: every sub-command the parser offers has one, and no
function is left without a sub-command."""

from __future__ import annotations

import argparse

from homeserver.__main__ import build_parser
from homeserver.inspect import COMMANDS


def _subcommands(parser: argparse.ArgumentParser, name: str) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            inner = action.choices[name]
            for sub in inner._actions:
                if isinstance(sub, argparse._SubParsersAction):
                    return set(sub.choices)
    raise AssertionError(f"no {name} sub-command")


def test_every_inspect_subcommand_has_its_function() -> None:
    assert _subcommands(build_parser(), "inspect") == set(COMMANDS)
