#!/usr/bin/env bash
# Installs what coldvault needs on a Debian machine, only what is missing:
# system packages (apt), a virtualenv in .venv with coldvault and its test tools and,
# as root, /usr/local/bin/coldvault, which runs it (scripts/install-command.sh).
# Safe to run again; a second run does nothing but check.
# The README's "Set up" section lists the same packages: keep them in step.
set -euo pipefail
cd "$(dirname "$0")/.."

want=(fuse3 libfuse3-dev pkg-config zfs-fuse restic gcc python3-dev attr strace)
missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "coldvault: missing system packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.coldvault-installed
want_stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_stamp" ]; then
    echo "installing coldvault into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test]'
    echo "$want_stamp" > "$stamp"
fi
if [ "$(id -u)" = 0 ]; then
    ./scripts/install-command.sh
elif ! command -v coldvault >/dev/null; then
    echo "coldvault: not on PATH; as root, run scripts/install-command.sh (or use $PWD/.venv/bin/coldvault)" >&2
fi
