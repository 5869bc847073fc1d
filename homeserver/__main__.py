"""`python -m homeserver`: run the server, or one of the admin commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeserver import __version__

if TYPE_CHECKING:
    from homeserver.config import Config


def _room_versions(args: argparse.Namespace) -> int:
    from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS

    rows = []
    for rv in KNOWN_ROOM_VERSIONS.values():
        row = {k: (v.name if hasattr(v, "name") else v) for k, v in rv.as_dict().items()}
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


def _load_config(args: argparse.Namespace) -> Config:
    """The configuration every command reads, as the server does: --config or HOMESERVER_CONFIG, then
    HOMESERVER_* variables."""
    from homeserver.config import ConfigError, load_config

    try:
        return load_config(args.config or os.environ.get("HOMESERVER_CONFIG"))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _data_dir(args: argparse.Namespace) -> Path:
    """--data-dir when given, else the configured one."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    return _load_config(args).data_dir


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    import gc

    # Start-up makes hundreds of thousands of long-lived objects (modules, classes, schemas) and little
    # garbage: the collector runs rarely until the server is up (measured: imports 12% faster; fully
    # off saves no more time and keeps 0.7 MiB more), then `server._settle_heap` restores the defaults.
    gc.set_threshold(20_000, 10, 10)
    from homeserver.server import StartupError, run
    from storage.engine import StoreError

    config = _load_config(args)
    try:
        return run(config)
    except (StartupError, StoreError) as e:  # one line: what is wrong, where, what to do
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C before the server was up
        return 130


def _config(args: argparse.Namespace) -> int:
    from homeserver.config import example_config

    print(example_config())
    return 0


def _keys(args: argparse.Namespace) -> int:
    """`keys rotate`: a new signing key; the old one's public half stays published as expired."""
    import time

    from homeserver.keys import KeyFileError, rotate_signing_key

    data_dir = _data_dir(args)
    try:
        old_id, new_id = rotate_signing_key(data_dir, int(time.time() * 1000))
    except (KeyFileError, OSError) as e:
        return _fail(f"cannot rotate the signing key in {data_dir}: {e}")
    print(f"signing key {old_id} replaced by {new_id}; {old_id} is published as an old key")
    return 0


def _repair(args: argparse.Namespace) -> int:
    from storage.engine import Store, StoreError, StoreLocked, repair

    data_dir = _data_dir(args)
    path = data_dir / "db"
    if not path.is_dir() or not any(path.iterdir()):
        return _fail(f"no store in {path}: give the server's data directory with --data-dir, or set data_dir")
    try:
        repair(path)
    except StoreError as e:
        return _fail(str(e))
    try:
        with Store(path) as store:
            n = store.verify()
    except StoreLocked as e:
        return _fail(str(e))
    except StoreError as e:
        return _fail(f"the store is still unusable after repair: {e}")
    print(f"repaired: {n} keys readable; run `python -m homeserver inspect check` to check the indexes")
    return 0


def _add_inspect_parser(sub: Any) -> None:
    # defined here, not in `homeserver.inspect`: building the parser must not import the store's
    # readers and checker, which `python -m homeserver` (serving) never needs
    from storage.rooms import MEMBERSHIPS

    p = sub.add_parser("inspect", help="read the store: tables, keys, events, state, members, export")
    _add_data_dir_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    isub = p.add_subparsers(dest="inspect_command", metavar="WHAT", required=True)
    isub.add_parser("tables", help="every table with its key count and size")
    scan = isub.add_parser("scan", help="decode the entries of one table")
    scan.add_argument("table")
    scan.add_argument("--limit", type=int, default=50)
    key = isub.add_parser("key", help="decode one key (table name, 0xFF, rest; escapes like \\xff allowed)")
    key.add_argument("key")
    key.add_argument("--hex", action="store_true", help="the key is given in hex")
    ev = isub.add_parser("event", help="an event by id, with its metadata")
    ev.add_argument("event_id")
    isub.add_parser("rooms", help="every room with its version and size")
    st = isub.add_parser("state", help="a room's current state, or its state at an event")
    st.add_argument("room_id")
    st.add_argument("--at", metavar="EVENT_ID", help="the state before this event")
    st.add_argument("--after", action="store_true", help="with --at: the state after the event")
    mem = isub.add_parser("members", help="a room's members")
    mem.add_argument("room_id")
    mem.add_argument("--membership", choices=MEMBERSHIPS)
    user = isub.add_parser("user", help="a user's account, devices (tokens masked) and rooms")
    user.add_argument("user_id")
    exp = isub.add_parser("export", help="export a room's timeline, or the whole store, as JSON lines")
    exp.add_argument("--room", metavar="ROOM_ID")
    exp.add_argument("--out", metavar="FILE")
    isub.add_parser("verify", help="read every block of the store, checking checksums")
    chk = isub.add_parser("check", help="check that every index agrees with the events (exit status 1 if not)")
    chk.add_argument("--full", action="store_true", help="also recompute the hash of every state snapshot")
    p.set_defaults(func=_inspect)


def _add_data_dir_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="the server's data directory (default: data_dir from the configuration, as the server reads it)",
    )
    # also accepted after the command; SUPPRESS keeps a --config given before it
    p.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file (env HOMESERVER_CONFIG)"
    )


def _inspect(args: argparse.Namespace) -> int:
    from homeserver.inspect import run
    from storage.engine import StoreError

    args.data_dir = _data_dir(args)
    try:
        return run(args)
    except StoreError as e:
        return _fail(str(e))
    except OSError as e:  # e.g. export --out to a folder that does not exist
        return _fail(f"{e.filename or 'output'}: {e.strerror or e}")


def _duration_ms(text: str) -> int:
    """7d, 12h, 30m, 45s (a number alone is days) as milliseconds."""
    units = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "d")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 7d, 12h or 30m") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return int(value * units[unit])


def _expiry(text: str) -> int | str:
    """--expires: "never" or a duration in milliseconds."""
    return text if text == "never" else _duration_ms(text)


def _uses(text: str) -> int | None:
    if text == "unlimited":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("uses must be a positive number or 'unlimited'")
    return int(text)


def _invite(args: argparse.Namespace) -> int:
    """Invites through the store when the server is stopped, else through the running server's
    invites API with an admin's access token (--access-token or HOMESERVER_ACCESS_TOKEN)."""
    import asyncio

    from homeserver.errors import MatrixError
    from homeserver.server import HomeServer
    from storage.engine import StoreError, StoreLocked

    config = _load_config(args)
    token = args.access_token or os.environ.get("HOMESERVER_ACCESS_TOKEN")
    try:
        hs = HomeServer(config)
    except StoreLocked:
        if not token:
            return _fail(
                "the server is running and holds the store: give an admin's access token "
                "(--access-token or HOMESERVER_ACCESS_TOKEN) to go through its API, or stop it first"
            )
        return _invite_over_http(config, token, args)
    except StoreError as e:
        return _fail(str(e))
    try:
        return asyncio.run(_invite_local(hs, args))
    except MatrixError as e:
        return _fail(e.message)
    finally:
        hs.close()


def _create_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "uses": args.uses,
        "expires_in_ms": None if args.expires in (None, "never") else args.expires,
        "never_expires": args.expires == "never",
        "note": args.note,
        "rooms": args.room,
        "admin": args.admin,
    }


async def _invite_local(hs: Any, args: argparse.Namespace) -> int:
    if args.invite_command == "create":
        created = await hs.invites.create(creator=args.inviter, as_admin=True, **_create_fields(args))
        return _print_created(created, args)
    if args.invite_command == "list":
        return _print_list(hs.invites.list(valid=None if args.all else True), args)
    revoked = await hs.invites.revoke(args.token, by=None, as_admin=True)
    print(f"revoked {revoked['token']}")
    return 0


def _invite_over_http(config: Config, token: str, args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.parse
    import urllib.request

    host = config.listen_host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    base = f"http://{'[' + host + ']' if ':' in host else host}:{config.listen_port}"
    path = "/_matrix/client/unstable/org.homeserver.invites"

    def call(method: str, url: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                message = e.reason
            raise SystemExit(_fail(f"the server answered {e.code}: {message}")) from None
        except OSError as e:
            raise SystemExit(_fail(f"cannot reach the server at {base}: {e}")) from None

    if args.invite_command == "create":
        if args.inviter is not None:
            return _fail("--from needs the store (stop the server): over the API the invite is from the token's user")
        return _print_created(call("POST", path, _create_fields(args)), args)
    if args.invite_command == "list":
        rows = call("GET", path + "?all=true")["invites"]
        return _print_list([r for r in rows if args.all or r["status"] == "valid"], args)
    revoked = call("DELETE", f"{path}/{urllib.parse.quote(args.token, safe='')}")
    print(f"revoked {revoked['token']}")
    return 0


def _print_created(created: dict[str, Any], args: argparse.Namespace) -> int:
    from homeserver.web import qr_terminal

    link = created["link"]
    if args.json:
        print(json.dumps(created, indent=2))
        return 0
    print(link)  # on a line of its own: scripts take it from here
    if not args.no_qr:
        print(qr_terminal(link), end="")
    uses = "unlimited" if created["uses_allowed"] is None else created["uses_allowed"]
    print(f"token {created['token']}, uses {uses}, expires {_when(created['expiry_time'])}")
    return 0


def _print_list(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        uses = "∞" if row["uses_allowed"] is None else row["uses_allowed"]
        rooms = ",".join(row["rooms"]) or "-"
        print(
            f"{row['token']:<26} {row['status']:<8} used {row['completed']}/{uses:<4} "
            f"expires {_when(row['expiry_time']):<17} rooms {rooms}  {row['note'] or ''}".rstrip()
        )
    return 0


def _when(ms: int | None) -> str:
    import datetime

    if ms is None:
        return "never"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M") + "Z"


def _add_invite_parser(sub: Any) -> None:
    p = sub.add_parser("invite", help="invite links: create, list, revoke")
    p.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file (env HOMESERVER_CONFIG)"
    )
    p.add_argument(
        "--access-token",
        help="an admin's access token, to go through the running server's API (env HOMESERVER_ACCESS_TOKEN)",
    )
    isub = p.add_subparsers(dest="invite_command", metavar="WHAT", required=True)
    create = isub.add_parser("create", help="a new invite link (printed on its own line, then a QR code)")
    create.add_argument("--uses", type=_uses, default=1, help="how many people may use it (or 'unlimited'; default 1)")
    create.add_argument(
        "--expires", type=_expiry, metavar="DURATION", help="e.g. 7d, 12h, 30m, or 'never' (default: config)"
    )
    create.add_argument("--room", action="append", default=[], help="a room or space (id or #alias) to join")
    create.add_argument("--admin", action="store_true", help="the account becomes a server admin")
    create.add_argument("--note", help="a note shown on the invite page")
    create.add_argument("--from", dest="inviter", metavar="USER_ID", help="shown as the inviter; invites to rooms")
    create.add_argument("--no-qr", action="store_true", help="no QR code")
    create.add_argument("--json", action="store_true", help="machine-readable output")
    ls = isub.add_parser("list", help="the invites that still work (--all: every one)")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true")
    rv = isub.add_parser("revoke", help="stop an invite working")
    rv.add_argument("token")
    p.set_defaults(func=_invite)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m homeserver",
        description="A lightweight Matrix homeserver: one process, an embedded LevelDB store, "
        "the client-server and federation APIs, with state resolution at its core. "
        "Without a command it runs the server.",
    )
    parser.add_argument("--version", action="version", version=f"homeserver {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: none; env HOMESERVER_CONFIG)")
    parser.set_defaults(func=_run)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the server (the default)")
    run.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file")
    run.set_defaults(func=_run)
    cfg = sub.add_parser("config", help="print a documented example config")
    cfg.set_defaults(func=_config)
    rv = sub.add_parser("room-versions", help="list the room versions this server implements and their features")
    rv.add_argument("--json", action="store_true", help="machine-readable output")
    rv.set_defaults(func=_room_versions)
    keys = sub.add_parser("keys", help="the server's signing key")
    ksub = keys.add_subparsers(dest="keys_command", metavar="WHAT", required=True)
    rotate = ksub.add_parser(
        "rotate", help="make a new signing key; the old one stays published as expired (stop the server first)"
    )
    _add_data_dir_options(rotate)
    keys.set_defaults(func=_keys)
    rep = sub.add_parser("repair", help="rebuild a damaged store's metadata from its surviving files")
    _add_data_dir_options(rep)
    rep.set_defaults(func=_repair)
    _add_inspect_parser(sub)
    _add_invite_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
