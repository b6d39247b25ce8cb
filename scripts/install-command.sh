#!/bin/sh
# Puts `coldvault` on PATH for root, cron and systemd: a two-line script, BINDIR/coldvault
# (default /usr/local/bin), that runs this checkout's virtualenv. Safe to run again.
#   COLDVAULT_BINDIR=DIR   put it in DIR instead (the tests use a temporary one)
# cron's default PATH is /usr/bin:/bin, without /usr/local/bin: docs/cron.md's crontab
# sets PATH for that; systemd units call /usr/local/bin/coldvault by its full path.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bindir=${COLDVAULT_BINDIR:-/usr/local/bin}
if [ ! -x "$here/.venv/bin/coldvault" ]; then
    echo "coldvault: $here/.venv/bin/coldvault is missing: run scripts/install-deps.sh first" >&2
    exit 1
fi
mkdir -p "$bindir"
tmp="$bindir/.coldvault.$$"
printf '#!/bin/sh\nexec %s/.venv/bin/coldvault "$@"\n' "$here" > "$tmp"
chmod 755 "$tmp"
if cmp -s "$tmp" "$bindir/coldvault"; then
    rm -f "$tmp"
else
    mv -f "$tmp" "$bindir/coldvault"
    echo "installed $bindir/coldvault (runs $here/.venv/bin/coldvault)"
fi
