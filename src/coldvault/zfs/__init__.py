"""ZFS: the `zfs` command as a source and a sink of send streams, and chain logic."""
