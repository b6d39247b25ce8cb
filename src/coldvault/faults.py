"""Crash points, for the tests that kill a backup at every phase of its write order.

COLDVAULT_CRASH_AT=<point>[:<n>] sends SIGKILL to this process the n-th time
(default: first) it passes <point>. Unset, `crash_point` costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "COLDVAULT_CRASH_AT"
_passed: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
