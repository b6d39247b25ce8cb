"""coldvault: backups of ZFS snapshots and directory trees to (cold) object storage."""

__version__ = "0.1.0"
