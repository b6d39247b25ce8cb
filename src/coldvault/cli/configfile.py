"""The config file (TOML): vault settings every command uses, and named backup profiles.

Where: ``--config FILE``, else ``$XDG_CONFIG_HOME/coldvault/config.toml`` (default
``~/.config/coldvault/config.toml``), else ``/etc/coldvault/config.toml``; the first
that exists is the only one read. docs/config.md is the user's guide.

Top-level keys (`GLOBAL_KEYS`) stand for options and environment variables every
command has: ``repo``, ``endpoint-url``, ``password-file``, ``password-command``,
``limit-upload``, ``limit-download``. A command-line flag beats the environment,
which beats the file; a profile's own value of such a key beats the file's top level.

``[profiles.NAME]`` is one ``coldvault backup KIND`` written down: ``kind`` (dir, zfs or
stdin; default dir), what to back up (``paths``, ``dataset``, or ``command`` for stdin),
and any long option of ``backup KIND`` spelled without its dashes (``exclude``,
``tag``, ``pre-hook``, ``sqlite-consistent``, ``keep-local`` ...). The keys a profile
takes are read from the backup parsers themselves, so a new option of ``backup dir``
is a profile key at once, with its type: a flag is a boolean, a repeatable option a
list of strings, any other a string (or an integer). ``[profiles.NAME.retention]``
holds forget's ``keep-*`` counts, applied to the profile's source after a backup that
ended well, and ``prune = true`` to prune afterwards.

``coldvault backup --profile NAME [OPTIONS]`` runs it: main.parse calls `insert_kind`
before parsing (the profile says which kind of backup) and `apply_profile` after; an
option given on the command line replaces the profile's key (a repeatable option
given at all replaces the profile's whole list).

Any problem with the file (TOML syntax, unknown key, wrong type, unknown profile) is a
`UserError` naming the file and the key, raised before anything is done.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass, field

from coldvault.errors import UserError

SYSTEM_PATH = "/etc/coldvault/config.toml"
KINDS = ("dir", "zfs", "stdin")
# key -> the attribute of the parsed command line it stands for
GLOBAL_KEYS = {"repo": "repo", "endpoint-url": "endpoint_url", "password-file": None, "password-command": None,
               "limit-upload": "limit_upload", "limit-download": "limit_download"}
NUMBER_KEYS = ("limit-upload", "limit-download")
# What a profile names besides options: the thing to back up, per kind.
WHAT_KEYS = {"dir": "paths", "zfs": "dataset", "stdin": "command"}
# Long options of `backup KIND` that are no profile keys: per run, or global, or the profile itself.
NOT_PROFILE_KEYS = {"help", "json", "time", "profile", "config", "verbose", "quiet", "command",
                    *GLOBAL_KEYS}
RETENTION_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")  # = vault.retention.RULES


@dataclass
class ConfigFile:
    path: str
    settings: dict = field(default_factory=dict)  # GLOBAL_KEYS found at the top level
    profiles: dict = field(default_factory=dict)  # name -> Profile


@dataclass
class Profile:
    name: str
    kind: str
    what: object  # paths (list), dataset (str) or command (list, may be empty)
    options: dict  # dest -> value, as the backup parser would have set it
    settings: dict  # GLOBAL_KEYS set in the profile
    retention: dict  # rule -> count
    prune: bool


def default_paths() -> list[str]:
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [os.path.join(home, "coldvault", "config.toml"), SYSTEM_PATH]


def locate(explicit: str | None) -> str | None:
    """The config file to read: `explicit` (which must exist), else the first default that does."""
    if explicit:
        return explicit
    for path in default_paths():
        if os.path.isfile(path):
            return path
    return None


def load(path: str, kinds: dict[str, argparse.ArgumentParser]) -> ConfigFile:
    """Read and check the whole file; `kinds` are the `backup KIND` parsers (their options are the profile keys)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    config = ConfigFile(path)
    for key, value in data.items():
        if key == "profiles":
            _check(isinstance(value, dict), path, key, "expected a table of profiles ([profiles.NAME])")
            for name, table in value.items():
                config.profiles[name] = _profile(path, name, table, kinds)
        elif key in GLOBAL_KEYS:
            config.settings[key] = _setting(path, key, key, value)
        else:
            raise UserError(f"{path}: {key}: unknown key")
    return config


def _check(ok: bool, path: str, key: str, what: str) -> None:
    if not ok:
        raise UserError(f"{path}: {key}: {what}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _setting(path: str, where: str, key: str, value):
    if key in NUMBER_KEYS:
        _check(_is_number(value) and value > 0, path, where, "expected a positive number of KiB/s")
        return value
    _check(isinstance(value, str) and value != "", path, where, "expected a string")
    return value


def _options(kind_parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Profile key -> the option of `backup KIND` it stands for."""
    keys = {}
    for action in kind_parser._actions:  # argparse lists no actions publicly
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and longs[0][2:] not in NOT_PROFILE_KEYS and not isinstance(action, argparse._CountAction):
            keys[longs[0][2:]] = action
    return keys


def _option_value(path: str, where: str, action: argparse.Action, value):
    """`value` from the file as the parser would have stored it for `action`, or a UserError."""
    if action.nargs == 0:  # a flag
        _check(isinstance(value, bool), path, where, "expected true or false")
        return action.const if value else action.default
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        _check(_is_strings(value), path, where, "expected a list of strings")
        return [_typed(path, where, action, v) for v in value]
    _check(isinstance(value, str) or _is_number(value), path, where,
           "expected an integer" if action.type is int else "expected a string")
    return _typed(path, where, action, str(value))  # --full-every 7: a number is its text, as on a command line


def _typed(path: str, where: str, action: argparse.Action, text: str):
    """`text` converted by the option's type and checked against its choices, as argparse would."""
    value = text
    if action.type is not None:
        try:
            value = action.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError, UserError):
            what = getattr(action.type, "__name__", "value")
            raise UserError(f"{path}: {where}: expected {'an integer' if action.type is int else 'a ' + what}, "
                            f"not {text!r}") from None
    if action.choices is not None:
        _check(value in action.choices, path, where, f"expected one of {', '.join(map(str, action.choices))}")
    return value


def _profile(path: str, name: str, table, kinds: dict[str, argparse.ArgumentParser]) -> Profile:
    here = f"profiles.{name}"
    _check(isinstance(table, dict), path, here, "expected a table ([profiles.NAME])")
    kind = table.get("kind", "dir")
    _check(kind in KINDS, path, f"{here}.kind", f"expected one of {', '.join(KINDS)}")
    what_key = WHAT_KEYS[kind]
    options = _options(kinds[kind])
    profile = Profile(name, kind, [] if kind == "stdin" else None, {}, {}, {}, False)
    for key, value in table.items():
        where = f"{here}.{key}"
        if key == "kind":
            continue
        if key == what_key:
            if kind == "zfs":
                _check(isinstance(value, str) and value != "", path, where, "expected a string (DATASET[@SNAP])")
            else:
                _check(_is_strings(value) and (kind == "stdin" or value), path, where, "expected a list of strings")
            profile.what = value
        elif key in GLOBAL_KEYS:
            profile.settings[key] = _setting(path, where, key, value)
        elif key == "retention":
            _retention(path, where, value, profile)
        elif key in options:
            action = options[key]
            profile.options[action.dest] = _option_value(path, where, action, value)
        else:
            raise UserError(f"{path}: {where}: unknown key for a {kind} profile")
    if kind != "stdin" and profile.what is None:
        raise UserError(f"{path}: {here}.{what_key}: missing (what the profile backs up)")
    if kind == "stdin" and "name" not in profile.options:
        raise UserError(f"{path}: {here}.name: missing (the file name of the stream)")
    return profile


def _retention(path: str, where: str, table, profile: Profile) -> None:
    _check(isinstance(table, dict), path, where, "expected a table (keep-daily = 7, ..., prune = true)")
    for key, value in table.items():
        if key == "prune":
            _check(isinstance(value, bool), path, f"{where}.{key}", "expected true or false")
            profile.prune = value
        elif key.startswith("keep-") and key[5:] in RETENTION_RULES:
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, path, f"{where}.{key}",
                   "expected a whole number of 0 or more")
            if value:
                profile.retention[key[5:]] = value
        else:
            raise UserError(f"{path}: {where}.{key}: unknown key (keep-last, keep-hourly, keep-daily, keep-weekly, "
                            "keep-monthly, keep-yearly or prune)")
    if profile.prune and not profile.retention:
        raise UserError(f"{path}: {where}.prune: prune after what? give keep-* counts too")


def backup_kinds(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The `backup KIND` parsers of the main parser."""
    return _choices(_choices(parser)["backup"])


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    raise AssertionError(f"{parser.prog} has no subcommands")


def find_profile_option(argv: list[str]) -> tuple[int, int, str] | None:
    """(index of the `backup` command, index of --profile, NAME) in `argv`, if it runs a profile."""
    takes_value = {"--repo", "-r", "--endpoint-url", "--config", "--limit-upload", "--limit-download"}
    command = None
    for i, word in enumerate(argv):
        if word == "--":
            return None
        if command is None:
            if not word.startswith("-") and (i == 0 or argv[i - 1] not in takes_value):
                if word != "backup":
                    return None
                command = i
            continue
        if word == "--profile" and i + 1 < len(argv):
            return command, i, argv[i + 1]
        if word.startswith("--profile="):
            return command, i, word.split("=", 1)[1]
    return None


def config_option(argv: list[str]) -> str | None:
    """--config FILE, looked for before the real parse (the profile says how to parse the rest)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args([w for w in argv if w != "--help" and w != "-h"])
    return known.config


def get_profile(config: ConfigFile | None, name: str, explicit: str | None) -> Profile:
    if config is None:
        looked = explicit or " or ".join(default_paths())
        raise UserError(f"--profile {name}: no config file ({looked} does not exist)")
    if name not in config.profiles:
        known = ", ".join(sorted(config.profiles)) or "none"
        raise UserError(f"{config.path}: profiles.{name}: no such profile (the file has: {known})")
    return config.profiles[name]


def insert_kind(argv: list[str], config: ConfigFile | None, explicit: str | None) -> list[str]:
    """`argv` with `backup --profile NAME ...` turned into `backup KIND --profile NAME ... -- WHAT`."""
    found = find_profile_option(argv)
    if found is None:
        return argv
    command, at, name = found
    profile = get_profile(config, name, explicit)
    width = 1 if "=" in argv[at] else 2
    rest = argv[command + 1:at] + argv[at + width:]
    if rest and rest[0] in KINDS:
        if rest[0] != profile.kind:
            raise UserError(f"profile {name} is a {profile.kind} backup, not {rest[0]}")
        rest = rest[1:]
    tail = []
    if profile.kind == "stdin":  # a required option: given first, so that the command line's comes later and wins
        rest = [f"--name={profile.options['name']}", *rest]
    elif profile.kind == "dir":
        tail = ["--", *profile.what]
    elif profile.kind == "zfs":
        tail = ["--", profile.what]
    return argv[:command + 1] + [profile.kind, "--profile", name] + rest + tail


def apply_profile(args: argparse.Namespace, config: ConfigFile, kind_parser: argparse.ArgumentParser) -> None:
    """Fill `args` (parsed from the command line insert_kind made) with the profile's keys
    wherever the command line left the parser's default."""
    profile = config.profiles[args.profile]
    if profile.kind == "dir" and args.path != profile.what:
        raise UserError(f"profile {profile.name} names its paths in {config.path}; give options only, no PATH")
    if profile.kind == "stdin" and profile.what and not args.from_command and not args.command_argv:
        args.from_command, args.command_argv = True, list(profile.what)
    for dest, value in profile.options.items():
        if getattr(args, dest) == kind_parser.get_default(dest):
            setattr(args, dest, value)
    args.profile_retention = profile.retention
    args.profile_prune = profile.prune


def settings_for(args: argparse.Namespace, config: ConfigFile | None) -> dict:
    """The GLOBAL_KEYS that apply: the profile's (if one runs), else the file's top level."""
    if config is None:
        return {}
    settings = dict(config.settings)
    name = getattr(args, "profile", None)
    if name:
        settings.update(config.profiles[name].settings)
    return settings


def profile_sources(args: argparse.Namespace, vault_sources) -> list[str]:
    """The sources the profile's backup wrote (those its retention applies to); `vault_sources`
    lists the vault's sources, for a recursive ZFS profile (a source per dataset below it)."""
    if args.kind == "dir":
        paths = [os.path.abspath(p) for p in args.path]
        return [args.name or os.path.basename(paths[0].rstrip("/")) or "root"]
    if args.kind == "stdin":
        return [args.source or args.name]
    from coldvault.zfs.chain import source_name

    source = source_name(args.target.partition("@")[0])
    if not args.recursive:
        return [source]
    return sorted(s for s in vault_sources() if s == source or s.startswith(source + "/"))


def run_profile(args: argparse.Namespace, parser: argparse.ArgumentParser, backup) -> int:
    """`backup(args)`, then the profile's retention (forget --keep-* per source, prune) if it ended well."""
    code = backup(args)
    if code or not args.profile_retention:
        return code

    def run(words: list[str]) -> int:
        sub = parser.parse_args(words)
        for key in ("repo", "endpoint_url", "verbose", "quiet"):
            setattr(sub, key, getattr(args, key))
        return sub.func(sub)

    def vault_sources():
        from coldvault.cli.common import open_vault

        return {r.source for r in open_vault(args, load_index=False).snapshots()}

    keep = [f"--keep-{rule}={n}" for rule, n in args.profile_retention.items()]
    for source in profile_sources(args, vault_sources):
        code = run(["forget", *keep, f"--source={source}"]) or code
    if args.profile_prune and not code:
        code = run(["prune"])
    return code
