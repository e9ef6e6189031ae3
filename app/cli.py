"""`psoriasis-keys`: create, list and revoke API keys from the command line."""

from __future__ import annotations

import argparse
import sys
import uuid

from app.auth.keys import Scope
from app.db.database import Database
from app.errors import DomainError
from app.services import api_keys
from app.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="psoriasis-keys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("name")
    create.add_argument(
        "--scopes",
        default="scores,read,write",
        help="comma-separated: scores,read,write,admin (default scores,read,write)",
    )
    sub.add_parser("list", help="list keys")
    revoke = sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)

    db = Database(get_settings().effective_database_url)
    try:
        if args.command == "create":
            try:
                scopes = frozenset(Scope(s.strip()) for s in args.scopes.split(",") if s.strip())
            except ValueError:
                parser.error("scopes must be among: scores, read, write, admin")
            with db.transaction() as session:
                info, token = api_keys.create_key(session, args.name, scopes)
            print(f"id: {info.id}\nname: {info.name}\nscopes: {' '.join(info.scopes)}")
            print(f"key (shown once): {token}")
        elif args.command == "list":
            with db.read() as session:
                for k in api_keys.list_keys(session):
                    state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
                    print(f"{k.id}  {k.name:30}  {' '.join(k.scopes):28}  {state}")
        else:
            try:
                key_id = uuid.UUID(args.key_id)
            except ValueError:
                parser.error("key_id must be a UUID (see `psoriasis-keys list`)")
            with db.transaction() as session:
                info = api_keys.revoke_key(session, key_id)
            print(f"revoked {info.id} ({info.name})")
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
