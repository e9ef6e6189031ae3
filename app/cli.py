"""Command-line administration.

`psoriasis-keys`: create, list and revoke API keys, and create and list organizations.
`psoriasis-audit verify`: recompute the audit trail's hash chain and name the first broken link.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from app.auth.keys import Scope
from app.db.database import Database
from app.errors import DomainError
from app.services import api_keys, audit, organizations
from app.settings import get_settings


def _organization_ids(db: Database, text: str) -> list[uuid.UUID]:
    """Organizations given by id or by name, comma-separated."""
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    with db.read() as session:
        rows, _next = organizations.list_organizations(session, 10_000, None)
    by_name = {o.name: o.id for o in rows}
    ids = []
    for item in wanted:
        try:
            ids.append(uuid.UUID(item))
        except ValueError:
            if item not in by_name:
                raise DomainError(f"no organization named {item!r}") from None
            ids.append(by_name[item])
    return ids


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
    create.add_argument(
        "--organizations",
        default="",
        help="comma-separated organization ids or names the key holds (a non-admin key needs "
        "at least one unless the service has exactly one organization)",
    )
    sub.add_parser("list", help="list keys")
    revoke = sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    org_create = sub.add_parser("create-organization", help="create an organization")
    org_create.add_argument("name")
    sub.add_parser("organizations", help="list organizations")
    args = parser.parse_args(argv)

    db = Database(get_settings().effective_database_url)
    try:
        if args.command == "create":
            try:
                scopes = frozenset(Scope(s.strip()) for s in args.scopes.split(",") if s.strip())
            except ValueError:
                parser.error("scopes must be among: scores, read, write, admin")
            orgs = _organization_ids(db, args.organizations) if args.organizations else None
            with db.transaction() as session:
                info, token = api_keys.create_key(
                    session, args.name, scopes, orgs, pointer="--organizations"
                )
            print(f"id: {info.id}\nname: {info.name}\nscopes: {' '.join(info.scopes)}")
            held = ", ".join(str(o) for o in info.organizations) or "all (admin)"
            print(f"organizations: {held}")
            print(f"key (shown once): {token}")
        elif args.command == "list":
            with db.read() as session:
                for k in api_keys.list_keys(session):
                    state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
                    held_by = ",".join(str(o) for o in k.organizations) or "all"
                    print(f"{k.id}  {k.name:30}  {' '.join(k.scopes):28}  {state:18}  {held_by}")
        elif args.command == "create-organization":
            with db.transaction() as session:
                org = organizations.create_organization(session, args.name)
            print(f"id: {org.id}\nname: {org.name}")
        elif args.command == "organizations":
            with db.read() as session:
                rows, _next = organizations.list_organizations(session, 10_000, None)
            for org in rows:
                print(f"{org.id}  {org.name}")
        else:
            try:
                key_id = uuid.UUID(args.key_id)
            except ValueError:
                parser.error("key_id must be a UUID (see `psoriasis-keys list`)")
            with db.transaction() as session:
                info = api_keys.revoke_key(session, key_id)
            print(f"revoked {info.id} ({info.name})")
    except DomainError as exc:
        detail = exc.detail
        errors = getattr(exc, "errors", None)
        if errors:
            detail = "; ".join(f"{e.get('pointer', '')} {e['detail']}".strip() for e in errors)
        print(f"error: {detail}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    return 0


def audit_main(argv: list[str] | None = None) -> int:
    """`psoriasis-audit verify`: 0 when the whole chain verifies, 1 naming the first broken
    link otherwise."""
    parser = argparse.ArgumentParser(
        prog="psoriasis-audit", description="Check the audit trail's hash chain."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="recompute the chain and name the first broken link")
    parser.parse_args(argv)
    db = Database(get_settings().effective_database_url)
    try:
        with db.read() as session:
            verified, broken = audit.verify_chain(session)
    finally:
        db.dispose()
    if broken is None:
        print(f"audit chain intact: {verified} events verified")
        return 0
    print(
        f"audit chain BROKEN at event {broken.event_id}: {broken.why} "
        f"({verified} events before it verified)"
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
