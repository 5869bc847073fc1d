"""`python -m homeserver`: the command-line entry point."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from homeserver import __version__


def _room_versions(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS

    rows = []
    for rv in KNOWN_ROOM_VERSIONS.values():
        row = {k: (v.name if hasattr(v, "name") else v) for k, v in asdict(rv).items()}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    id_forms = {"V1": "$id:server", "V2": "base64", "V3": "url-safe"}
    flags = [k for k in rows[0] if isinstance(rows[0][k], bool)]
    print(f"{'version':<8} {'event ids':<11} {'state res':<10} features")
    for row in rows:
        on = ", ".join(f for f in flags if row[f])
        state_res = str(row["state_res"]).replace("_", ".").lower()
        print(f"{row['identifier']:<8} {id_forms[str(row['event_format'])]:<11} {state_res:<10} {on}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m homeserver",
        description="A lightweight Matrix homeserver: one process, an embedded LevelDB store, "
        "the client-server and federation APIs, with state resolution at its core.",
    )
    parser.add_argument("--version", action="version", version=f"homeserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rv = sub.add_parser("room-versions", help="list the room versions this server implements and their features")
    rv.add_argument("--json", action="store_true", help="machine-readable output")
    rv.set_defaults(func=_room_versions)
    from homeserver import inspect

    inspect.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
