"""What coldvault asks of numpy before it is imported (coldvault/__init__.py): one BLAS thread,
and no transparent huge pages for large arrays unless the environment asks for them (on this
kind of VM their first touch stalled the 10M-blob index build: bench/RESULTS.md)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import os, coldvault, numpy\n"
         "m = numpy._core.multiarray if hasattr(numpy, '_core') else numpy.core.multiarray  # numpy 2 / 1\n"
         "print(m._get_madvise_hugepage(), os.environ['OPENBLAS_NUM_THREADS'])\n")


def probe(**env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("NUMPY_MADVISE_HUGEPAGE", "OPENBLAS_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", PROBE], env=base | env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_numpy_gets_no_huge_pages_and_one_blas_thread_by_default():
    assert probe() == ["False", "1"]


def test_the_environment_still_decides():
    assert probe(NUMPY_MADVISE_HUGEPAGE="1", OPENBLAS_NUM_THREADS="2") == ["True", "2"]
