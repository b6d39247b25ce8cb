"""coldvault: backups of ZFS snapshots and directory trees to (cold) object storage."""

import os

# numpy (the index tables) starts one BLAS thread per core at import, which coldvault never
# uses; they cost about 0.3 s of CPU in every command (measured on a 1 GiB backup). One is enough.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# numpy asks the kernel for transparent huge pages on large arrays; where THP `defrag` is
# `madvise` (the setting that honours that request), their first touch can stall on memory
# compaction: building a 10M-blob index took 2.1-2.8 s with them, 2.0 s without, with less
# system time (bench/RESULTS.md). NUMPY_MADVISE_HUGEPAGE=1 in the environment asks again.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

__version__ = "0.1.0"
