"""Operators' command line: ``python -m shared.cli ...``.

    accounts list [--size N] [--all]      the accounts, as JSON (one page, or every page)
    accounts show ID                      one account
    accounts disconnect ID                delete its subscriptions and token cache (idempotent)
    accounts resync ID                    run a delta round for it now
    connect --device-code                 connect an account on a machine without a browser
    doctor                                check every setting and dependency, say what to fix
    messages list ACCOUNT [--folder F] [--since T] [--top N] [--continuation C] [--all]
    messages show ACCOUNT MESSAGE [--body-type text|html]
    messages move ACCOUNT MESSAGE DESTINATION   a well-known folder name or a folder id
    messages delete ACCOUNT MESSAGE [--permanent]
    files list ACCOUNT [--folder ID | --path PATH] [--size N] [--all]   a folder's items, as JSON
    files upload ACCOUNT FILE PATH [--conflict replace|rename|fail]     put a local file at PATH
    files download ACCOUNT ITEM_ID [--output FILE]                       the file's bytes (stdout by default)

Settings come from the environment, as in the Functions host; ``--settings FILE`` reads a
``local.settings.json`` first (its values win over the environment: asked for explicitly).
The device-code flow uses the public client, and the account remembers it, so its refresh
token is later redeemed by the public client too (``ClientKind.PUBLIC``).
Exit status: 0 done, 1 the account or the operation failed, 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from shared import bootstrap
from shared.accounts import account_summary, list_accounts, show_account
from shared.bootstrap import Services
from shared.connect import complete_device_connect, disconnect_account, start_device_connect
from shared.errors import AuthFlowError, ConfigurationError, ConnectorError, NotFoundError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description="Operate the mail connector.")
    parser.add_argument("--settings", type=Path, help="a local.settings.json whose Values to use")
    commands = parser.add_subparsers(dest="command", required=True)

    accounts = commands.add_parser("accounts", help="list, show, disconnect or resync accounts")
    actions = accounts.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list accounts")
    listing.add_argument("--size", type=int, default=50, help="page size (1-100)")
    listing.add_argument("--continuation", help="continue after an earlier page")
    listing.add_argument("--all", action="store_true", help="every page")
    for name, text in (
        ("show", "show one account"),
        ("disconnect", "disconnect one account"),
        ("resync", "run a delta round for one account"),
    ):
        actions.add_parser(name, help=text).add_argument("account_id")

    connect = commands.add_parser("connect", help="connect an account")
    connect.add_argument("--device-code", action="store_true", required=True, help="use the device-code flow")
    commands.add_parser("doctor", help="check settings, redirect URI, identity platform, storage and Key Vault")
    _add_messages_parser(commands)
    _files_parser(commands)
    return parser


def _add_messages_parser(commands: Any) -> None:
    messages = commands.add_parser("messages", help="list, show, move or delete an account's mail")
    actions = messages.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a folder's messages, newest first")
    listing.add_argument("account_id")
    listing.add_argument("--folder", default="inbox", help="a well-known folder name or a folder id")
    listing.add_argument("--since", help="received at or after this ISO 8601 time")
    listing.add_argument("--top", type=int, default=50, help="page size (1-100)")
    listing.add_argument("--continuation", help="continue after an earlier page")
    listing.add_argument("--all", action="store_true", help="every page")
    show = actions.add_parser("show", help="one message, with its body and attachments")
    show.add_argument("account_id")
    show.add_argument("message_id")
    show.add_argument("--body-type", default="html", choices=("html", "text"))
    move = actions.add_parser("move", help="move a message (its id stays)")
    move.add_argument("account_id")
    move.add_argument("message_id")
    move.add_argument("destination", help="a well-known folder name (archive, junkemail, ...) or a folder id")
    delete = actions.add_parser("delete", help="to Deleted Items, or for good with --permanent")
    delete.add_argument("account_id")
    delete.add_argument("message_id")
    delete.add_argument("--permanent", action="store_true")


def load_settings_file(path: Path) -> None:
    """Put a local.settings.json's ``Values`` into the environment (relative paths of the
    CA bundle resolved against the file's folder, as the devhost does with the project's)."""
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    for name, value in values.items():
        text = str(value)
        if name == "REQUESTS_CA_BUNDLE" and text and not Path(text).is_absolute():
            text = str((path.parent / text).resolve())
        os.environ[name] = text


def main(
    argv: Sequence[str] | None = None,
    *,
    services: Services | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        from shared.doctor import diagnose, report

        try:
            if args.settings is not None:
                load_settings_file(args.settings)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=err)
            return 2
        return report(diagnose(services=services), out)
    try:
        if args.settings is not None:
            load_settings_file(args.settings)
        current = services or bootstrap.services()
    except (ConfigurationError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    try:
        if args.command == "connect":
            return _connect_device_code(current, out, err)
        if args.command == "messages":
            return _messages(current, args, out)
        if args.command == "files":
            return _files(current, args, out)
        return _accounts(current, args, out)
    except NotFoundError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except AuthFlowError as exc:
        print(f"error: sign-in failed: {exc.error} {exc.description}".rstrip(), file=err)
        return 1
    except ConnectorError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=err)
        return 1


def _print(out: IO[str], value: Any) -> None:
    out.write(json.dumps(value, indent=2) + "\n")


def _accounts(services: Services, args: argparse.Namespace, out: IO[str]) -> int:
    if args.action == "list":
        accounts, continuation = list_accounts(services, size=args.size, continuation=args.continuation)
        while args.all and continuation:
            more, continuation = list_accounts(services, size=args.size, continuation=continuation)
            accounts += more
        _print(out, {"accounts": accounts, "continuation": continuation})
    elif args.action == "show":
        _print(out, show_account(services, args.account_id))
    elif args.action == "disconnect":
        _print(out, account_summary(services, disconnect_account(services, args.account_id)))
    elif args.action == "resync":
        from shared.sync import sync_mailbox

        if services.accounts.get(args.account_id) is None:
            raise NotFoundError(f"account {args.account_id} does not exist")
        result = sync_mailbox(services, args.account_id, reason="operator")
        _print(
            out,
            {
                "account": args.account_id,
                "created": result.created,
                "updated": result.updated,
                "deleted": result.deleted,
                "skipped": result.skipped,
            },
        )
    return 0


def _messages(services: Services, args: argparse.Namespace, out: IO[str]) -> int:
    from shared import mail_actions

    if args.action == "list":
        since = mail_actions.check_since(args.since)
        top = mail_actions.check_top(args.top)
        messages, continuation = mail_actions.list_messages(
            services, args.account_id, folder=args.folder, since=since, top=top, continuation=args.continuation
        )
        while args.all and continuation:
            more, continuation = mail_actions.list_messages(services, args.account_id, continuation=continuation)
            messages += more
        _print(out, {"messages": messages, "continuation": continuation})
    elif args.action == "show":
        _print(out, mail_actions.get_message(services, args.account_id, args.message_id, body_type=args.body_type))
    elif args.action == "move":
        _print(out, mail_actions.move_message(services, args.account_id, args.message_id, args.destination))
    elif args.action == "delete":
        mail_actions.delete_message(services, args.account_id, args.message_id, permanent=args.permanent)
        _print(out, {"deleted": args.message_id, "permanent": args.permanent})
    return 0


def _connect_device_code(services: Services, out: IO[str], err: IO[str]) -> int:
    flow = start_device_connect(services)
    # The user reads this on the operator's terminal: where to go and which code to enter.
    print(
        flow.get("message") or f"Enter the code {flow.get('user_code')} at {flow.get('verification_uri')}",
        file=err,
    )
    err.flush()
    result = complete_device_connect(services, flow)
    _print(out, {**account_summary(services, result.account), "reconnected": result.reconnected})
    return 0


# -- files: a connected account's OneDrive (shared/drive_files.py) ------------------------

def _files_parser(commands: Any) -> None:
    files = commands.add_parser("files", help="list, upload or download an account's OneDrive files")
    actions = files.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a folder's items (the root by default)")
    listing.add_argument("account_id")
    where = listing.add_mutually_exclusive_group()
    where.add_argument("--folder", default="root", help="the folder's item id")
    where.add_argument("--path", help="the folder's path below the root")
    listing.add_argument("--size", type=int, default=50, help="page size (1-200)")
    listing.add_argument("--continuation", help="continue after an earlier page")
    listing.add_argument("--all", action="store_true", help="every page")
    upload = actions.add_parser("upload", help="put a local file at a path of the drive")
    upload.add_argument("account_id")
    upload.add_argument("file", type=Path)
    upload.add_argument("path", help="where in the drive, e.g. Documents/report.docx")
    upload.add_argument("--conflict", default="replace", choices=("replace", "rename", "fail"))
    download = actions.add_parser("download", help="a file's bytes")
    download.add_argument("account_id")
    download.add_argument("item_id")
    download.add_argument("--output", type=Path, help="write here instead of stdout")


def _files(services: Services, args: argparse.Namespace, out: IO[str]) -> int:
    from shared import drive_files

    if args.action == "list":
        folder = args.folder
        if args.path:
            folder = drive_files.get_item_by_path(services, args.account_id, args.path)["id"]
        items, continuation = drive_files.list_children(
            services, args.account_id, folder, size=args.size, continuation=args.continuation
        )
        while args.all and continuation:
            more, continuation = drive_files.list_children(
                services, args.account_id, folder, size=args.size, continuation=continuation
            )
            items += more
        _print(out, {"items": items, "continuation": continuation})
    elif args.action == "upload":
        content = args.file.read_bytes()
        result = drive_files.upload_file(services, args.account_id, args.path, content, conflict=args.conflict)
        _print(out, {**result.item, "created": result.created, "uploadSession": result.session})
    elif args.action == "download":
        drive_files.get_item(services, args.account_id, args.item_id)  # a missing item fails before --output is made
        target = args.output.open("wb") if args.output else getattr(out, "buffer", None)
        if target is None:
            raise ConfigurationError("stdout takes no bytes here; give --output FILE")
        try:
            _download(services, args.account_id, args.item_id, target)
        finally:
            if args.output:
                target.close()
            else:
                target.flush()
    return 0


def _download(services: Services, account_id: str, item_id: str, target: IO[bytes]) -> None:
    """Chunk by chunk from Graph's download URL to ``target``: a file of any size, never whole."""
    from shared import drive_files

    content = drive_files.download(services, account_id, item_id)
    try:
        for chunk in content.chunks:
            target.write(chunk)
    finally:
        content.close()


if __name__ == "__main__":
    raise SystemExit(main())
