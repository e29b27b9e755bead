"""``python -m vs_lib user``: make, list and revoke the credentials the service accepts.

::

    python -m vs_lib user token USERNAME [--days N] [--label TEXT]   # prints a new API token, once
    python -m vs_lib user revoke SELECTOR_OR_TOKEN | --user USERNAME  # revokes one, or all of a user's
    python -m vs_lib user list [--user USERNAME]                      # no secrets, no emails
    python -m vs_lib user password USERNAME [--stdin]                 # sets a web sign-in password

The token is the only line ``user token`` writes to standard output, so a script can keep
it: ``TOKEN=$(python -m vs_lib user token user00001)``. Everything else goes to standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
import time
from pathlib import Path

from .. import database
from .credentials import MAX_DAYS, UnknownUser, issue, list_credentials, revoke, user_id_of
from .passwords import set_password

CLI_HELP = "make (token), list and revoke the credentials of platform users; set a sign-in password"


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", type=Path, default=None, help="platform database (default data/visual_search.db)")
    sub = parser.add_subparsers(dest="action", metavar="action", required=True)
    p = sub.add_parser("token", parents=[common], help="print a new API token for USERNAME (shown once)")
    p.add_argument("username")
    p.add_argument("--days", type=float, default=30.0, help=f"lifetime in days (default 30, at most {MAX_DAYS})")
    p.add_argument("--label", default="", help="a note shown by `user list`")
    p = sub.add_parser(
        "revoke", parents=[common], help="revoke a credential (its selector or the token itself) or all of a user's"
    )
    p.add_argument("credential", nargs="?", default=None, help="selector (from `user list`) or the token")
    p.add_argument("--user", default=None, help="revoke every credential of this user")
    p = sub.add_parser(
        "list", parents=[common], help="list credentials: user, kind, selector, state, expiry (never secrets)"
    )
    p.add_argument("--user", default=None, help="only this user's")
    p = sub.add_parser("password", parents=[common], help="set the password USERNAME signs in with on the web page")
    p.add_argument("username")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input (one line)")


def _fmt(t: int | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def cli_main(args: argparse.Namespace) -> int:
    database.upgrade(args.db)  # an older database gains the credentials tables
    conn = database.connect(args.db)
    try:
        with contextlib.suppress(BrokenPipeError):
            return _run(conn, args)
    except (UnknownUser, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0


def _run(conn, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    if args.action == "token":
        uid = user_id_of(conn, args.username)
        token = issue(conn, uid, "token", seconds=args.days * 86400, label=args.label)
        print(
            f"API token for {args.username}, valid {args.days:g} days (shown once; send as "
            "`Authorization: Bearer <token>` or paste it into the web page's sign-in):",
            file=sys.stderr,
        )
        print(token)
        return 0
    if args.action == "revoke":
        if (args.credential is None) == (args.user is None):
            raise ValueError("give a credential (selector or token) or --user USERNAME, not both")
        n = (revoke(conn, user_id=user_id_of(conn, args.user)) if args.user is not None
             else revoke(conn, selector=args.credential))  # fmt: skip
        print(f"revoked {n} credential(s)", file=sys.stderr)
        return 0 if n else 1
    if args.action == "list":
        only: int | None = user_id_of(conn, args.user) if args.user else None
        rows = list_credentials(conn, only)
        print(f"{'user':<12} {'kind':<8} {'selector':<17} {'state':<8} {'created':<17} {'expires':<17} label")
        for c in rows:
            print(f"{c.username:<12} {c.kind:<8} {c.selector:<17} {c.state():<8} {_fmt(c.created_at):<17} "
                  f"{_fmt(c.expires_at):<17} {c.label}")  # fmt: skip
        return 0
    # password
    uid = user_id_of(conn, args.username)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"new password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    set_password(conn, uid, password)
    print(f"password set for {args.username}", file=sys.stderr)
    return 0
