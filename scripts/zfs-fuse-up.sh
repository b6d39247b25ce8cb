#!/bin/bash
# Start the zfs-fuse daemon unless it runs, and wait until it answers.
#
# A daemon killed without a chance to clean up (a machine or session that ended) leaves
# its pid file behind, and zfs-fuse then refuses to start ("exit 1", nothing printed):
# with no zfs-fuse running, that file is removed first. Pools of earlier test runs whose
# backing files are gone (names cvt..., state FAULTED or UNAVAIL) are forgotten, so
# `zpool list` stays readable. Used by tests/zfstools.py and bench/bench_zfs.py.
set -euo pipefail

pidfile=/run/zfs-fuse.pid
# Test workers run in parallel (pytest-xdist): one of them starts the daemon, the others wait.
# The daemon must not inherit the lock's descriptor (9>&- below), or it would hold the lock
# for as long as it runs.
exec 9>/run/coldvault-zfs-fuse-up.lock
flock -w 120 9 || { echo "another zfs-fuse-up.sh held /run/coldvault-zfs-fuse-up.lock for 120 s" >&2; exit 1; }
command -v zfs-fuse >/dev/null || { echo "zfs-fuse is not installed (make test installs it)" >&2; exit 1; }

# A daemon that is shutting down still shows in pgrep but no longer answers: wait for it
# to go, then start a new one.
up=
for _ in $(seq 150); do
    if ( zpool list >/dev/null 2>&1 ) 2>/dev/null; then up=1; break; fi
    if ! pgrep -x zfs-fuse >/dev/null; then
        rm -f "$pidfile"    # no zfs-fuse runs, so whatever it names is gone (or a zombie)
        zfs-fuse --pidfile "$pidfile" 9>&- || echo "zfs-fuse --pidfile $pidfile exited with status $?" >&2
    fi
    sleep 0.2
done
[[ -n $up ]] || { echo "zfs-fuse did not come up within 30 s" >&2; exit 1; }

zpool list -H -o name,health | while read -r name health; do
    if [[ $name == cvt* && ( $health == FAULTED || $health == UNAVAIL ) ]]; then
        zpool destroy -f "$name" >/dev/null 2>&1 || true
    fi
done
