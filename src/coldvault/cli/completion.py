"""`coldvault completion bash|zsh|fish`: a shell completion script, generated from the
argument parser by shtab (nothing is written by hand: new commands and options are in it)."""

from __future__ import annotations

import sys

from coldvault.errors import UserError

SHELLS = ("bash", "zsh", "fish")


def register(sub, common) -> None:
    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print the completion script for SHELL, generated from coldvault's own "
                                   "argument parser. Install it, e.g. for bash: coldvault completion bash > "
                                   "/etc/bash_completion.d/coldvault")
    p.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash, zsh or fish")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import shtab
    except ImportError:
        raise UserError("completion needs the Python package shtab, which is not installed",
                        hint="pip install shtab (it is a dependency of coldvault)") from None
    from coldvault.cli.main import build_parser

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0
