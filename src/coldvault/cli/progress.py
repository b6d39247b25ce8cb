"""A one-line progress display, only when stderr is a terminal."""

from __future__ import annotations

import sys

import trio


async def show(render, interval: float = 0.5) -> None:
    """Redraw `render()` on stderr until cancelled; does nothing off a TTY."""
    if not sys.stderr.isatty():
        return
    try:
        while True:
            await trio.sleep(interval)
            sys.stderr.write("\r\x1b[K" + render())
            sys.stderr.flush()
    finally:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


async def run_with_progress(fn, render):
    """Run `await fn()` while showing progress; returns its result."""
    result = None

    async with trio.open_nursery() as nursery:
        nursery.start_soon(show, render)

        async def main():
            nonlocal result
            result = await fn()
            nursery.cancel_scope.cancel()

        nursery.start_soon(main)
    return result
