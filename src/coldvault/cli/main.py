"""`coldvault` entry point: parse, set up logging, run one command, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from coldvault import __version__, runtime
from coldvault.cli import configfile
from coldvault.cli.common import use_config_password
from coldvault.errors import ColdvaultError, ExitCode, UserError
from coldvault.store import throttle
from coldvault.store.url import ENDPOINT_ENV

log = logging.getLogger("coldvault")

LIMIT_ENV = {"upload": "COLDVAULT_LIMIT_UPLOAD", "download": "COLDVAULT_LIMIT_DOWNLOAD"}


def _common(p: argparse.ArgumentParser, default) -> None:
    """Options every command takes, before or after the command name."""
    p.add_argument("--repo", "-r", default=default(None), help="vault URL: a path, file:///path or s3://bucket/prefix (env COLDVAULT_REPO)")
    p.add_argument("--endpoint-url", default=default(None), help="S3 endpoint (env COLDVAULT_S3_ENDPOINT)")
    p.add_argument("--config", metavar="FILE", default=default(None),
                   help="config file (default: ~/.config/coldvault/config.toml, else /etc/coldvault/config.toml; "
                        "see docs/config.md)")
    p.add_argument("--limit-upload", metavar="KiB/s", default=default(None),
                   help=f"upload at most this many KiB per second, all stores together (env {LIMIT_ENV['upload']})")
    p.add_argument("--limit-download", metavar="KiB/s", default=default(None),
                   help=f"download at most this many KiB per second (env {LIMIT_ENV['download']})")
    p.add_argument("--verbose", "-v", action="count", default=default(0), help="more log output (-vv for debug)")
    p.add_argument("--quiet", "-q", action="store_true", default=default(False), help="only errors")
    p.add_argument("--no-cache", action="store_true", default=default(False),
                   help="neither use nor write the local index cache (env COLDVAULT_NO_CACHE=1)")


def build_parser() -> argparse.ArgumentParser:
    from coldvault.cli import (backup, check, completion, copy, diff, dump, find, forget, init, key, ls, mount,
                               prune, repair, restore, snapshots, stats, thaw, unlock)

    parser = argparse.ArgumentParser(prog="coldvault", description="Backups to (cold) object storage, mountable.")
    parser.add_argument("--version", action="version", version=f"coldvault {__version__}")
    _common(parser, lambda v: v)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, lambda v: argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (init, backup, snapshots, ls, mount, restore, thaw, forget, prune, check, repair,
                   dump, diff, find, stats, unlock, key, completion, copy):
        module.register(sub, common)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, with what the config file sets (cli/configfile.py) where it is silent.

    The file is read and checked first; `backup --profile NAME` gets its kind from the
    profile before the parse, and the profile's keys after it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    explicit = configfile.config_option(argv)
    path = configfile.locate(explicit)
    try:
        config = configfile.load(path, configfile.backup_kinds(parser)) if path else None
    except UserError:
        if not _asks_for_help(argv):
            raise
        config = None  # --help and --version work with a broken file
    argv = configfile.insert_kind(argv, config, explicit)
    args = _parse_words(parser, argv)
    if getattr(args, "profile", None):
        configfile.apply_profile(args, config, configfile.backup_kinds(parser)[args.kind])
        backup = args.func
        args.func = lambda a: configfile.run_profile(a, parser, backup)
    _settings(args, configfile.settings_for(args, config), config)
    return args


def _asks_for_help(argv: list[str]) -> bool:
    words = argv[:argv.index("--")] if "--" in argv else argv
    return any(w in ("-h", "--help", "--version") for w in words)


def _parse_words(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, except that a command's optional positional named by its `late_positional`
    default (ls's and restore dir's PATH) may also come after options: argparse fills an
    optional positional with the mandatory one before it, so `ls latest --source photos
    2024/summer` would leave 2024/summer unrecognized. A list of them (backup dir's PATHs)
    takes every word left over, so paths may stand before, between and after options, as
    restic takes them."""
    args, extras = parser.parse_known_args(argv)
    late = getattr(args, "late_positional", None)
    words = extras and not any(w.startswith("-") for w in extras)
    if late and words and isinstance(getattr(args, late), list):
        getattr(args, late).extend(extras)  # backup dir /a --tag x /b: the paths around options
        extras = []
    elif late and words and len(extras) == 1 and getattr(args, late) in (None, ""):
        setattr(args, late, extras.pop())
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _settings(args, settings: dict, config) -> None:
    """The vault settings in force: the command line's, else the environment's, else the config file's."""
    if args.repo is None and not os.environ.get("COLDVAULT_REPO"):
        args.repo = settings.get("repo")
    if args.endpoint_url is None and not os.environ.get(ENDPOINT_ENV):
        args.endpoint_url = settings.get("endpoint-url")
    args.config_password = (settings.get("password-file"), settings.get("password-command"),
                            config.path if config else None)  # used by main(): parse changes no state
    for what in ("upload", "download"):
        option = f"--limit-{what}"
        value, origin = getattr(args, f"limit_{what}"), option
        if value is None and os.environ.get(LIMIT_ENV[what]):
            value, origin = os.environ[LIMIT_ENV[what]], LIMIT_ENV[what]
        if value is None and f"limit-{what}" in settings:
            value = settings[f"limit-{what}"]  # checked when the file was read
        setattr(args, f"limit_{what}", value if value is None else _kib_per_second(origin, value))


def _kib_per_second(origin: str, value) -> float:
    try:
        kib = float(value)
    except ValueError:
        kib = -1.0
    if not 0 < kib < float("inf"):
        raise UserError(f"{origin} must be a positive number of KiB per second, not {value!r}")
    return kib


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
    try:
        args = parse(parser, argv)
    except ColdvaultError as exc:  # the config file, or a limit: before anything is done
        print(f"coldvault: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    _setup_logging(args)
    if args.no_cache:
        os.environ["COLDVAULT_NO_CACHE"] = "1"  # read by vault/indexcache.py, and by a mount's child process
    runtime.reuse_freed_buffers()  # every command moves ~1 MiB buffers: backup, restore, check, mount
    use_config_password(*args.config_password)
    throttle.set_limits(args.limit_upload, args.limit_download)
    try:
        try:
            code = args.func(args)
            for line in throttle.summary():
                log.info("%s", line)
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
