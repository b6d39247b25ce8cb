"""The layers stay visible, lowest first:

    index < store < vault (with zfs/) < uploader, restore, check < mount < cli

index/ is pure format code, store/ only moves bytes (it knows nothing of the
format either). Each layer may import the layers below it and the base modules
(errors, faults, runtime, privatefiles), nothing above or beside it: uploader,
restore and check do not import each other, and mount/, a read-only view, reads
through vault/ and uses none of the three. The base modules import no layer.

Two checks per layer. A fresh interpreter imports every module of the layer
and reports what ended up in sys.modules (catches imports made indirectly).
An AST walk of the layer's source reports every import statement, including
ones inside functions, and, for index/, every call that would do I/O.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import coldvault

SRC = Path(coldvault.__file__).parent

# Base modules: anyone may import them, they import no layer.
BASE = ["coldvault", "coldvault.errors", "coldvault.faults", "coldvault.runtime", "coldvault.privatefiles"]
# Lowest layer first; each maps its units to the packages (or modules) they consist of.
# Units of one layer may not import each other; vault/ and zfs/ (the zfs command and
# the chains of streams) are one unit.
LAYERS = [
    {"index": ["coldvault.index"]},
    {"store": ["coldvault.store"]},
    {"vault": ["coldvault.vault", "coldvault.zfs"]},
    {"uploader": ["coldvault.uploader"], "restore": ["coldvault.restore"], "check": ["coldvault.check"]},
    {"mount": ["coldvault.mount"]},
    {"cli": ["coldvault.cli", "coldvault.__main__"]},
]
UNITS = {name: packages for layer in LAYERS for name, packages in layer.items()}
# What some units may not use on top of that.
EXTRA_FORBIDDEN = {
    "index": ["trio", "boto3", "botocore", "pyfuse3"],
    "store": ["coldvault.index"],  # it moves bytes; the format is not its business
    # A read-only view of the vault: it reads through vault/, never through a backup,
    # a restore or check (what it shares with them belongs in vault/).
    "mount": ["coldvault.uploader", "coldvault.restore", "coldvault.check"],
}


def forbidden(unit: str) -> list[str]:
    """What `unit` may not import: every other unit of its own layer and of the layers above."""
    if unit == "base":
        return [p for packages in UNITS.values() for p in packages]
    level = next(i for i, layer in enumerate(LAYERS) if unit in layer)
    return [p for layer in LAYERS[level:] for name, packages in layer.items() if name != unit
            for p in packages] + EXTRA_FORBIDDEN.get(unit, [])


INDEX_FORBIDDEN = forbidden("index")
# Nothing under index/ may even import these (checked on the source, since the
# interpreter itself loads some of them at startup).
INDEX_NO_IO_MODULES = [
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "glob",
    "fnmatch",
    "mmap",
    "socket",
    "ssl",
    "select",
    "selectors",
    "asyncio",
    "http",
    "urllib",
    "requests",
    "subprocess",
    "multiprocessing",
    "sqlite3",
    "pickle",
    "importlib",
    "fcntl",
]
IO_BUILTINS = ("open", "input", "exec", "eval")
def under(name: str, prefixes: list[str]) -> list[str]:
    return [p for p in prefixes if name == p or name.startswith(p + ".")]


def layer_modules(package: str) -> list[str]:
    path = SRC / package.split(".", 1)[1]
    names = [package] + [f"{package}.{m.name}" for m in pkgutil.walk_packages([str(path)])]
    assert len(names) > 1, f"no modules found under {path}"
    return names


def modules_loaded_by(modules: list[str]) -> set[str]:
    """sys.modules of a fresh interpreter after importing `modules` (and nothing else)."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return set(json.loads(out.stdout))


def source_files(package: str) -> list[Path]:
    files = sorted((SRC / package.split(".", 1)[1]).rglob("*.py"))
    assert files
    return files


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import anywhere in `source`, the text of
    `module`; `from a import b` gives both `a` and `a.b`, since b may be a submodule."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            found.append((node.lineno, origin))
            found += [(node.lineno, f"{origin}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append((node.lineno, "<__import__>"))
    return found


def file_imports(path: Path) -> list[tuple[int, str]]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def io_problems(source: str) -> list[str]:
    """Calls of open() and friends, and any use of `os` other than `os.urandom`."""
    tree = ast.parse(source)
    bad = []
    attribute_values = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS:
            bad.append(f"{node.lineno}: {node.func.id}()")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level:
            bad += [f"{node.lineno}: from os import {a.name}" for a in node.names if a.name != "urandom"]
        elif isinstance(node, ast.Import):
            bad += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("os.")]
            bad += [f"{node.lineno}: import os as {a.asname}" for a in node.names if a.name == "os" and a.asname]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            attribute_values.add(id(node.value))
            if node.attr != "urandom":
                bad.append(f"{node.lineno}: os.{node.attr}")
    # `os` passed around or aliased (x = os) would hide other calls.
    bad += [
        f"{n.lineno}: bare use of os"
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id == "os" and isinstance(n.ctx, ast.Load) and id(n) not in attribute_values
    ]
    return bad


def unit_files(unit: str) -> list[Path]:
    """The source files of a unit of LAYERS, or of the base modules ("base")."""
    files = []
    for name in BASE if unit == "base" else UNITS[unit]:
        path = SRC.joinpath(*name.split(".")[1:])
        if name == "coldvault":
            files.append(SRC / "__init__.py")
        elif path.is_dir():
            files += sorted(path.rglob("*.py"))
        else:
            files.append(path.with_suffix(".py"))
    assert files and all(f.is_file() for f in files), f"no sources for {unit}"
    return files


# cli/ is the top: it may import anything (that nothing imports it is checked below it).
CHECKED = [unit for unit in [*UNITS, "base"] if forbidden(unit)]
UNIT_FILES = [(unit, path) for unit in CHECKED for path in unit_files(unit)]


def test_layer_lists_are_complete():
    # The modules these tests must cover really are there, and each has a place in the order.
    index = layer_modules("coldvault.index")
    for name in ("ids", "limits", "crypto", "blob", "envelope", "pack", "packindex", "tree", "snapshot", "config"):
        assert f"coldvault.index.{name}" in index
    assert "coldvault.store.base" in layer_modules("coldvault.store")
    every = [p for packages in UNITS.values() for p in packages]
    homeless = [module_name(p) for p in sorted(SRC.rglob("*.py"))
                if module_name(p) not in BASE and not under(module_name(p), every)]
    assert homeless == [], "modules in no layer: add them to LAYERS or BASE"
    assert CHECKED == ["index", "store", "vault", "uploader", "restore", "check", "mount", "base"]


@pytest.mark.parametrize("unit", CHECKED)
def test_layer_loads_nothing_above_it(unit):
    # coldvault.__main__ runs the command when imported; it is a file of cli/, which is not probed.
    modules = [module_name(p) for p in unit_files(unit)]
    loaded = modules_loaded_by(modules)
    assert set(modules) <= loaded  # the imports did run
    if unit == "store":
        assert "boto3" in loaded  # the probe sees third-party imports too (store/s3.py)
    bad = sorted(m for m in loaded if under(m, forbidden(unit)))
    assert bad == [], f"importing {unit} loads {bad}"


@pytest.mark.parametrize("unit,path", UNIT_FILES, ids=[f"{u}-{module_name(p)}" for u, p in UNIT_FILES])
def test_layer_source_imports(unit, path):
    bad = [f"{path.name}:{line}: {name}" for line, name in file_imports(path) if under(name, forbidden(unit))]
    assert bad == []


@pytest.mark.parametrize("path", source_files("coldvault.index"), ids=lambda p: p.name)
def test_index_source_imports_nothing_for_io(path):
    bad = [
        f"{path.name}:{line}: {name}"
        for line, name in file_imports(path)
        if name == "<__import__>" or under(name, INDEX_NO_IO_MODULES)
    ]
    assert bad == []


@pytest.mark.parametrize("path", source_files("coldvault.index"), ids=lambda p: p.name)
def test_index_source_does_no_io(path):
    """No open(), and `os` only for os.urandom (random keys and nonces)."""
    assert [f"{path.name}:{p}" for p in io_problems(path.read_text())] == []


# The local store is the one store whose objects are files; no other module of store/
# reads or writes files (a price table, a settings file: those belong above it).
FILE_STORE = {"local.py"}


def file_opens(source: str) -> list[str]:
    """open(), io.open, os.open and os.fdopen calls in `source`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            out.append(f"{node.lineno}: open()")
        elif (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
              and (f.value.id, f.attr) in {("io", "open"), ("os", "open"), ("os", "fdopen")}):
            out.append(f"{node.lineno}: {f.value.id}.{f.attr}()")
    return out


@pytest.mark.parametrize("path", [p for p in source_files("coldvault.store") if p.name not in FILE_STORE],
                         ids=lambda p: p.name)
def test_store_opens_no_files_but_the_local_store(path):
    assert [f"{path.name}:{p}" for p in file_opens(path.read_text())] == []


def test_file_open_check_is_not_vacuous():
    assert len(file_opens((SRC / "store" / "local.py").read_text())) >= 2
    found = file_opens("import io, os\nopen('x'); io.open('y'); os.fdopen(3); os.path.join('a')\n")
    assert sorted(found) == ["2: io.open()", "2: open()", "2: os.fdopen()"]


def test_checks_catch_violations():
    """The AST checks are not vacuous: a module that breaks every rule is caught."""
    source = (
        "import os\nimport trio\nfrom ..store import base\nfrom io import BytesIO\n"
        "def f(path):\n    from coldvault import vault\n    key = os.urandom(32)\n"
        "    with open(path) as f:\n        return os.listdir(f.read()), os\n"
    )
    names = {n for _, n in imports_in(source, "coldvault.index.bad")}
    assert {"trio", "coldvault.store", "coldvault.store.base", "coldvault.vault", "io"} <= names
    assert not under("coldvault.errors", INDEX_FORBIDDEN)
    problems = io_problems(source)
    assert any("open()" in p for p in problems)
    assert any("os.listdir" in p for p in problems)
    assert any("bare use of os" in p for p in problems)
    assert not any(p.startswith("7:") for p in problems)  # os.urandom is fine


def test_order_forbids_what_the_issue_names():
    """The table says what it should: upward and sideways imports are caught, downward ones not."""
    names = {n for _, n in imports_in("def f():\n    from ..restore.zfsrestore import stream_chunks\n",
                                      "coldvault.vault.usage")}
    assert under("coldvault.restore.zfsrestore.stream_chunks", forbidden("vault"))
    assert "coldvault.restore.zfsrestore" in names
    for unit, name in [("vault", "coldvault.restore.dirrestore"), ("check", "coldvault.restore.zfsrestore"),
                       ("mount", "coldvault.restore.dirrestore"), ("restore", "coldvault.check"),
                       ("uploader", "coldvault.restore"), ("restore", "coldvault.uploader.session"),
                       ("mount", "coldvault.cli.common"), ("vault", "coldvault.mount.views"),
                       ("store", "coldvault.vault"), ("store", "coldvault.index.ids"), ("index", "trio"),
                       ("base", "coldvault.store.base")]:
        assert under(name, forbidden(unit)), (unit, name)
    for unit, name in [("vault", "coldvault.zfs.chain"), ("vault", "coldvault.store.base"),
                       ("check", "coldvault.vault.streams"), ("mount", "coldvault.vault.paths"), ("restore", "coldvault.errors"),
                       ("store", "coldvault.faults"), ("index", "coldvault.errors")]:
        assert not under(name, forbidden(unit)), (unit, name)
