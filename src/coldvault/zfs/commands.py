"""The `zfs` command line: snapshots, properties, send and receive.

Every call names the dataset or snapshot it was about when it fails, with
what zfs itself said.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from coldvault.errors import UserError

# ZFS component names: letters, digits, and "-_.:" plus spaces in snapshot names are
# legal, but we keep to what `zfs` accepts and what cannot be mistaken for an option.
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*(/[A-Za-z0-9_.:\-]+)*$")
_SNAPNAME = re.compile(r"^[A-Za-z0-9_.:\-]+$")
SEND_FLAGS = {"raw": "-w", "compressed": "-c", "large_block": "-L", "props": "-p"}


class ZfsError(UserError):
    """`zfs` refused or failed; the message carries its own words."""

    exit_code = 1


@dataclass(frozen=True)
class LocalSnapshot:
    dataset: str
    name: str
    guid: int
    createtxg: int
    creation: int  # unix seconds

    @property
    def full_name(self) -> str:
        return f"{self.dataset}@{self.name}"


def check_dataset(name: str) -> str:
    if not _DATASET.match(name):
        raise UserError(f"{name!r} is not a ZFS dataset name")
    return name


def check_snapname(name: str) -> str:
    if not _SNAPNAME.match(name):
        raise UserError(f"{name!r} is not a ZFS snapshot name")
    return name


def split_snapshot(spec: str) -> tuple[str, str | None]:
    """`pool/fs@snap` -> ("pool/fs", "snap"); `pool/fs` -> ("pool/fs", None)."""
    dataset, at, snap = spec.partition("@")
    check_dataset(dataset)
    if at:
        check_snapname(snap)
        return dataset, snap
    return dataset, None


def _run_zfs(*args: str, input=None) -> subprocess.CompletedProcess:
    if shutil.which("zfs") is None:
        raise UserError("the zfs command is not installed", hint="install zfsutils-linux (or zfs-fuse)")
    return subprocess.run(["zfs", *args], capture_output=True, input=input)


def _said(p: subprocess.CompletedProcess) -> str:
    said = p.stderr.decode(errors="replace").strip().splitlines()
    return said[0] if said else "exit status %d" % p.returncode


def _zfs(*args: str, input=None) -> str:
    p = _run_zfs(*args, input=input)
    if p.returncode != 0:
        raise ZfsError(f"zfs {args[0]} failed: {_said(p)}")
    return p.stdout.decode()


def exists(name: str) -> bool:
    if shutil.which("zfs") is None:
        raise UserError("the zfs command is not installed", hint="install zfsutils-linux (or zfs-fuse)")
    p = subprocess.run(["zfs", "list", "-H", "-o", "name", name], capture_output=True)
    return p.returncode == 0


def _infos(names: list[str]) -> list[LocalSnapshot]:
    """GUID, createtxg and creation of snapshots, in one `zfs get` (options both OpenZFS
    and the older zfs-fuse understand)."""
    if not names:
        return []
    out = _zfs("get", "-H", "-p", "-o", "name,property,value", "guid,createtxg,creation", *names)
    props: dict[str, dict[str, int]] = {}
    for line in out.splitlines():
        name, prop, value = line.split("\t")
        props.setdefault(name, {})[prop] = int(value)
    snaps = []
    for name, p in props.items():
        ds, _, snap = name.partition("@")
        snaps.append(LocalSnapshot(ds, snap, p["guid"], p["createtxg"], p["creation"]))
    return snaps


def snapshots(dataset: str) -> list[LocalSnapshot]:
    """The dataset's own snapshots (not its children's), oldest first (by createtxg)."""
    out = _zfs("list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset)
    names = [n for n in out.split() if n.partition("@")[0] == dataset]
    return sorted(_infos(names), key=lambda s: s.createtxg)


def snapshot_info(dataset: str, snap: str) -> LocalSnapshot:
    return _infos([f"{dataset}@{snap}"])[0]


def create_snapshot(dataset: str, snap: str) -> LocalSnapshot:
    _zfs("snapshot", f"{dataset}@{snap}")
    return snapshot_info(dataset, snap)


def datasets(root: str) -> list[str]:
    """`root` and every filesystem and volume below it, parents before their children."""
    out = _zfs("list", "-H", "-o", "name", "-r", "-t", "filesystem,volume", root)
    return sorted(out.split(), key=lambda n: (n.count("/"), n))


def snapshot_names_below(root: str) -> set[str]:
    """The names (after @) of every snapshot of `root` and of the datasets below it."""
    out = _zfs("list", "-H", "-t", "snapshot", "-o", "name", "-r", root)
    return {n.partition("@")[2] for n in out.split()}


def create_recursive_snapshot(root: str, snap: str) -> None:
    """`zfs snapshot -r`: one atomic snapshot of `root` and every dataset below it."""
    _zfs("snapshot", "-r", f"{root}@{snap}")


def hold(full_name: str, tag: str) -> bool:
    """`zfs hold TAG SNAPSHOT`; False when the snapshot holds that tag already."""
    return _tag_command("hold", tag, full_name, "tag already exists")


def release(full_name: str, tag: str) -> bool:
    """`zfs release TAG SNAPSHOT`; False when the snapshot does not hold that tag."""
    return _tag_command("release", tag, full_name, "no such tag")


def _tag_command(verb: str, tag: str, full_name: str, nothing_to_do: str) -> bool:
    p = _run_zfs(verb, tag, full_name)
    if p.returncode == 0:
        return True
    said = _said(p)
    if nothing_to_do in said:
        return False
    raise ZfsError(f"zfs {verb} {tag} {full_name} failed: {said}")


def userrefs(names: list[str]) -> dict[str, int]:
    """How many holds (of any tag) each snapshot has: its `userrefs` property. (`zfs holds`
    itself is not used: zfs-fuse cannot list holds.)"""
    if not names:
        return {}
    out = _zfs("get", "-H", "-p", "-o", "name,value", "userrefs", *names)
    refs = {}
    for line in out.splitlines():
        name, value = line.split("\t")
        refs[name] = int(value) if value.isdigit() else 0
    return refs


def destroy_snapshot(full_name: str) -> None:
    if "@" not in full_name:
        raise ValueError(f"{full_name} is not a snapshot")  # never a dataset
    _zfs("destroy", full_name)


def send(dataset: str, snap: str, base: str | None, flags: list[str]) -> subprocess.Popen:
    """Start `zfs send`; its stdout is the stream. The caller checks the exit status."""
    args = ["zfs", "send", *flags]
    if base is not None:
        args += ["-i", f"{dataset}@{base}"]
    args.append(f"{dataset}@{snap}")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def receive(target: str, force: bool = True) -> subprocess.Popen:
    args = ["zfs", "receive"] + (["-F"] if force else []) + [target]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
