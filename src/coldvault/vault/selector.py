"""Snapshot selectors: which snapshot a SNAPSHOT argument names.

    1a2b3c4d           an id, or any prefix of one that only one snapshot has
    latest             the newest snapshot
    2026-11-24         the last snapshot of that UTC day
    2026-11-24T03:00   the last snapshot at or before that time (UTC unless it says
                       otherwise: 2026-11-24T03:00:00+01:00); seconds are optional

Among the snapshots of one source when one is given. A day or a time that snapshots of
several sources match is ambiguous without one, as is an id prefix two snapshots share.
"""

from __future__ import annotations

import datetime as dt
import re

from coldvault.errors import UserError

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")
HEX = re.compile(r"[0-9a-fA-F]+")
# `SELECTOR:PATH` (thaw targets): groups sel and path (a time selector has colons of its own).
WITH_PATH = re.compile(r"(?P<sel>latest|" + TIME.pattern + "|" + DAY.pattern + r"|[0-9a-fA-F]+):(?P<path>.*)", re.S)

NS = 1_000_000_000


class Filter:
    """--tag, --host and --path, as restic reads them: a snapshot matches when it has all
    the tags of at least one --tag (`--tag a,b --tag c`: a and b, or c), was made on one of
    the --host names, and holds every --path (an absolute path it was backed up from)."""

    def __init__(self, tags=(), hosts=(), paths=()):
        self.tag_sets = [{t.strip() for t in v.split(",") if t.strip()} for v in tags]
        self.hosts = set(hosts)
        self.paths = {p.rstrip("/") or "/" for p in paths}

    def __bool__(self) -> bool:
        return bool(self.tag_sets or self.hosts or self.paths)

    def __call__(self, rec) -> bool:
        if self.tag_sets and not any(ts <= set(rec.tags) for ts in self.tag_sets):
            return False
        if self.hosts and rec.hostname not in self.hosts:
            return False
        return self.paths <= {p.rstrip("/") or "/" for p in rec.paths}

    def describe(self) -> str:
        """For messages: ' with tag ..., on host ..., of path ...'."""
        out = []
        if self.tag_sets:
            out.append("tagged " + " or ".join(",".join(sorted(ts)) for ts in self.tag_sets))
        if self.hosts:
            out.append("from host " + " or ".join(sorted(self.hosts)))
        if self.paths:
            out.append("of path " + " and ".join(sorted(self.paths)))
        return (" " + ", ".join(out)) if out else ""


def is_selector(spec: str) -> bool:
    return spec == "latest" or any(p.fullmatch(spec) for p in (DAY, TIME, HEX))


def _ns(t: dt.datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * NS + t.microsecond * 1000


def _window(spec: str) -> tuple[int, int] | None:
    """[start, end) in unix ns of the snapshots a day or time selector may pick, else None."""
    try:
        if DAY.fullmatch(spec):
            start = _ns(dt.datetime.fromisoformat(spec))
            return start, start + 86400 * NS
        if TIME.fullmatch(spec):
            return 0, _ns(dt.datetime.fromisoformat(spec)) + 1  # at or before it
    except ValueError:
        raise UserError(f"snapshot {spec!r}: not a valid date or time") from None
    return None


def _of(source: str | None) -> str:
    return f" of source {source!r}" if source else ""


def select(spec: str, records: list, source: str | None = None, what: str = "") -> object:
    """The record `spec` names among `records` (oldest first, already filtered: by `source`
    when given; `what` describes any other filter for messages)."""
    where = _of(source) + what
    if spec == "latest":
        if not records:
            raise UserError(f"there are no snapshots{where} in the vault", hint="list them with 'coldvault snapshots'")
        return records[-1]
    window = _window(spec)
    if window is not None:
        start, end = window
        hits = [r for r in records if start <= r.time < end]
        if not hits:
            when = "that UTC day" if DAY.fullmatch(spec) else "at or before that time (UTC unless given)"
            raise UserError(f"no snapshot {spec!r}{where} in the vault: none {when}",
                            hint="list them with 'coldvault snapshots'")
        sources = sorted({r.source for r in hits})
        if source is None and len(sources) > 1:
            shown = ", ".join(sources[:5]) + (", ..." if len(sources) > 5 else "")
            raise UserError(f"snapshot {spec!r} is ambiguous: snapshots of {len(sources)} sources match ({shown})",
                            hint="pick one with --source")
        return hits[-1]
    if not HEX.fullmatch(spec):
        raise UserError(f"{spec!r} is not a snapshot: give an id (a prefix will do), 'latest', "
                        "a UTC day (2026-11-24) or a time (2026-11-24T03:00)")
    matches = [r for r in records if r.id.startswith(spec.lower())]
    if not matches:
        raise UserError(f"no snapshot {spec!r}{where} in the vault", hint="list them with 'coldvault snapshots'")
    if len(matches) > 1:
        raise UserError(f"snapshot id {spec!r}{where} is ambiguous ({len(matches)} match); give more digits")
    return matches[0]
