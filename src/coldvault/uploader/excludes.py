"""What `backup dir` leaves out: --exclude, --iexclude, --exclude-file, --exclude-caches,
--exclude-if-present, with restic's pattern rules (docs/excludes.md).

The walk asks `Excludes.skip(dir_fd, dir_path, name, st)` once per directory entry; an
excluded directory is not entered at all. Patterns match the entry's absolute path:

- `*` and `?` and `[...]` match within one path component (never a `/`); `**` matches
  any number of whole components, none included;
- a pattern that starts with `/` is anchored at the file system's root; any other
  matches the end of a path (`*.tmp`, `cache/*`, `.git`), as if it began with `**/`;
- a pattern ending in `/` is the same pattern without it;
- `$VAR` and `${VAR}` are replaced by the environment's value;
- --iexclude patterns ignore case.

--exclude-caches keeps a directory that holds a valid CACHEDIR.TAG (it starts with the
standard's signature) but none of its contents; --exclude-if-present NAME does the same
for a directory holding a file NAME (NAME is a plain name, no wildcards).
"""

from __future__ import annotations

import fnmatch
import os
import re

from coldvault.errors import UserError

CACHEDIR_TAG = b"CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


class Pattern:
    def __init__(self, text: str, fold: bool, origin: str):
        self.text = text
        raw = os.path.expandvars(text.strip())
        if not raw:
            raise UserError(f"{origin}: an empty exclude pattern")
        if raw.startswith("!"):
            raise UserError(f"{origin}: {text!r}: re-including with '!' is not supported; leave the pattern out")
        anchored = raw.startswith("/")
        parts = [p for p in raw.strip("/").split("/") if p]
        if not parts:
            raise UserError(f"{origin}: {text!r} would exclude everything")
        if not anchored:
            parts = ["**", *parts]
        self.fold = fold
        flags = re.S | (re.I if fold else 0)
        self.parts = [None if p == "**" else re.compile(fnmatch.translate(p), flags) for p in parts]

    def matches(self, components: list[str]) -> bool:
        return _match(self.parts, 0, components, 0)


def _match(parts: list, i: int, comps: list[str], j: int) -> bool:
    while i < len(parts):
        p = parts[i]
        if p is None:  # **: zero or more components
            return any(_match(parts, i + 1, comps, k) for k in range(j, len(comps) + 1))
        if j >= len(comps) or not p.match(comps[j]):
            return False
        i, j = i + 1, j + 1
    return j == len(comps)


def read_exclude_file(path: str) -> list[str]:
    """Patterns of an --exclude-file: one per line; blank lines and lines starting with # are ignored."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UserError(f"cannot read exclude file {path}: {exc.strerror}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


class Excludes:
    def __init__(self, exclude=(), iexclude=(), exclude_files=(), exclude_caches: bool = False,
                 if_present=()):
        self.patterns = [Pattern(t, False, "--exclude") for t in exclude]
        self.patterns += [Pattern(t, True, "--iexclude") for t in iexclude]
        for path in exclude_files:
            self.patterns += [Pattern(t, False, f"exclude file {path}") for t in read_exclude_file(path)]
        self.markers = [os.fsencode(n) for n in if_present]
        for n in if_present:
            if not n or "/" in n or n in (".", ".."):
                raise UserError(f"--exclude-if-present {n!r}: give a file name, not a path")
        self.caches = exclude_caches
        self._emptied: dict[bytes, bool] = {}  # directory path -> its contents are left out
        self.excluded = 0

    def __bool__(self) -> bool:
        return bool(self.patterns or self.markers or self.caches)

    def skip(self, dir_fd: int, dir_path: bytes, name: bytes, st: os.stat_result) -> bool:
        """Leave out `name`, an entry of the directory open as `dir_fd` (named `dir_path`)?"""
        if self._contents_left_out(dir_fd, dir_path):
            self.excluded += 1
            return True
        if self.patterns:
            comps = os.fsdecode(dir_path + b"/" + name).strip("/").split("/")
            if any(p.matches(comps) for p in self.patterns):
                self.excluded += 1
                return True
        return False

    def leaves_out_contents(self, dir_path: bytes) -> bool:
        """Does the directory `dir_path` keep its contents out (a marker of --exclude-if-present,
        or a CACHEDIR.TAG with --exclude-caches)? The walk's rule, by path, for a caller without
        the walk's descriptors (backup dir --watch); False if the directory cannot be opened."""
        if not (self.markers or self.caches):
            return False
        try:
            fd = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return any(_exists(fd, m) for m in self.markers) or (self.caches and _is_cache(fd))
        finally:
            os.close(fd)

    def _contents_left_out(self, dir_fd: int, dir_path: bytes) -> bool:
        if not (self.markers or self.caches):
            return False
        hit = self._emptied.get(dir_path)
        if hit is None:
            hit = any(_exists(dir_fd, m) for m in self.markers) or (self.caches and _is_cache(dir_fd))
            if len(self._emptied) > 4096:  # the walk goes depth first: old entries are done with
                self._emptied.clear()
            self._emptied[dir_path] = hit
        return hit


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except OSError:
        return False


def _is_cache(dir_fd: int) -> bool:
    try:
        fd = os.open(CACHEDIR_TAG, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return os.read(fd, len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(fd)
