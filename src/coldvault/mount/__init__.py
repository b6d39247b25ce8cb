"""The read-only FUSE view of a vault. FUSE ends here: `fuse_ops` is the only module
that speaks pyfuse3 (a thin adapter with the one table of errno values), over a
virtual tree that holds the logic and is tested without mounting (tests/test_vfs.py).

- `layout`: the mount's folders, defined once (pure: snapshot records in, names out);
  `vfs` builds the tree from it and `targets` parses mounted paths back with it
  (`coldvault thaw /mnt/vault/...`).
- `vfs`: the operations (lookup, listdir, open, read, xattrs); `nodes`: what a
  directory, a file, a stream or a link is; `inodes`: inode numbers, and the one
  record per directory the kernel holds something of; `handles`: open files, reads, readahead
  and the cold policy; `errors`: the typed errors `fuse_ops` maps to errno.
- `chunkcache`: where chunk bytes come from (memory, a private on-disk cache, a
  ranged GET); `restore_manager`: the async face of `vault.thaw` for reads that meet
  cold data; `views`: the per-day change sets; `runner`: mounting, daemon, lock;
  `live`: a live mount's refresh (new and forgotten snapshots, the index after a prune).
"""
