"""coldvault: backups of ZFS snapshots and directory trees to (cold) object storage."""

import os

# numpy (the index tables) starts one BLAS thread per core at import, which coldvault never
# uses; they cost about 0.3 s of CPU in every command (measured on a 1 GiB backup). One is enough.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
