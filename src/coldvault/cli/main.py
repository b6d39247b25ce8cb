"""`coldvault` entry point: parse, set up logging, run one command, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from coldvault import __version__, runtime
from coldvault.errors import ColdvaultError, ExitCode

log = logging.getLogger("coldvault")


def _common(p: argparse.ArgumentParser, default) -> None:
    """Options every command takes, before or after the command name."""
    p.add_argument("--repo", "-r", default=default(None), help="vault URL: a path, file:///path or s3://bucket/prefix (env COLDVAULT_REPO)")
    p.add_argument("--endpoint-url", default=default(None), help="S3 endpoint (env COLDVAULT_S3_ENDPOINT)")
    p.add_argument("--verbose", "-v", action="count", default=default(0), help="more log output (-vv for debug)")
    p.add_argument("--quiet", "-q", action="store_true", default=default(False), help="only errors")
    p.add_argument("--no-cache", action="store_true", default=default(False),
                   help="neither use nor write the local index cache (env COLDVAULT_NO_CACHE=1)")


def build_parser() -> argparse.ArgumentParser:
    from coldvault.cli import (backup, check, completion, diff, dump, find, forget, init, ls, mount, prune, repair,
                               restore, snapshots, stats, thaw, unlock)

    parser = argparse.ArgumentParser(prog="coldvault", description="Backups to (cold) object storage, mountable.")
    parser.add_argument("--version", action="version", version=f"coldvault {__version__}")
    _common(parser, lambda v: v)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, lambda v: argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (init, backup, snapshots, ls, mount, restore, thaw, forget, prune, check, repair,
                   dump, diff, find, stats, unlock, completion):
        module.register(sub, common)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, except that a command's optional positional named by its `late_positional`
    default (ls's and restore dir's PATH) may also come after options: argparse fills an
    optional positional with the mandatory one before it, so `ls latest --source photos
    2024/summer` would leave 2024/summer unrecognized."""
    args, extras = parser.parse_known_args(argv)
    late = getattr(args, "late_positional", None)
    if late and len(extras) == 1 and not extras[0].startswith("-") and getattr(args, late) in (None, ""):
        setattr(args, late, extras.pop())
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _setup_logging(args) -> None:
    level = logging.WARNING
    if args.quiet:
        level = logging.ERROR
    elif args.verbose >= 2:
        level = logging.DEBUG
    elif args.verbose == 1:
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("coldvault: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _leaf(exc: BaseException) -> BaseException:
    """The error inside trio's exception groups, when they hold a single kind of thing."""
    while isinstance(exc, BaseExceptionGroup):
        wanted = [e for e in exc.exceptions if isinstance(e, (ColdvaultError, KeyboardInterrupt))]
        exc = (wanted or exc.exceptions)[0]
    return exc


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    _setup_logging(args)
    if args.no_cache:
        os.environ["COLDVAULT_NO_CACHE"] = "1"  # read by vault/indexcache.py, and by a mount's child process
    runtime.reuse_freed_buffers()  # every command moves ~1 MiB buffers: backup, restore, check, mount
    try:
        try:
            code = args.func(args)
        except BaseExceptionGroup as group:
            leaf = _leaf(group)
            if isinstance(leaf, (ColdvaultError, KeyboardInterrupt)):
                raise leaf from None
            raise
    except ColdvaultError as exc:
        print(f"coldvault: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"coldvault: hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("coldvault: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return ExitCode.OK
    return code or ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
