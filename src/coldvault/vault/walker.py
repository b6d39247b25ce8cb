"""The one tree walker: every entry below a tree node, depth first, in name order.

`walk` is a generator with an explicit stack, not a recursion: memory grows with
the depth of the tree (one node per level), never with the number of entries it
passes, and a deep tree cannot exhaust Python's recursion limit. Each tree node
is loaded once per walk, when the walk enters its directory; a caller that stops
early loads nothing more.

With `seen`, a set of tree ids kept by the caller, a tree already in it is not
entered again, and every tree entered is added: several walks sharing one set
visit each tree once (what the blobs a vault uses, and prune, need). Without it,
a tree that appears under two names is walked under both, as a listing must.
"""

from __future__ import annotations

from typing import Iterator

from coldvault.index import tree
from coldvault.index.ids import BlobId
from coldvault.vault.vault import Vault


def walk(vault: Vault, root: bytes, prefix: bytes = b"", *, seen: set[bytes] | None = None,
         dirs_last: bool = False) -> Iterator[tuple[bytes, tree.Entry]]:
    """(path, entry) of everything below the tree node `root`, paths relative to it
    (or joined to `prefix`). A directory comes before its children, or after them
    with `dirs_last`; the root itself has no entry and is not yielded."""
    if seen is not None:
        if root in seen:
            return
        seen.add(root)
    # One frame per directory being walked: (its path, its entry, the rest of its entries).
    stack: list[tuple[bytes, tree.Entry | None, Iterator[tree.Entry]]] = [
        (prefix, None, iter(vault.load_tree(BlobId(root)).entries))]
    while stack:
        rel, _, entries = stack[-1]
        e = next(entries, None)
        if e is None:
            _, done, _ = stack.pop()
            if dirs_last and done is not None:
                yield rel, done
            continue
        path = rel + b"/" + e.name if rel else e.name
        enter = e.type == tree.DIR and (seen is None or e.tree not in seen)
        if not (enter and dirs_last):
            yield path, e
        if enter:
            if seen is not None:
                seen.add(e.tree)
            stack.append((path, e, iter(vault.load_tree(BlobId(e.tree)).entries)))


def chunks_below(vault: Vault, root: bytes) -> Iterator[list[bytes]]:
    """The chunk ids of each file below the tree node `root`, in `walk`'s order, reading
    each node's outline (`tree.outline`: the same checks, no entry objects). For a caller
    that needs only which blobs a subtree uses."""
    stack = [iter(vault.load_outline(BlobId(root)))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        _, kind, ref = item
        if kind == tree.FILE:
            yield ref
        elif kind == tree.DIR:
            stack.append(iter(vault.load_outline(BlobId(ref))))

