#!/usr/bin/env bash
# The main job on the embedded default, a local vault directory: back up a sample
# tree twice with a change in between, list the snapshots, restore the latest and
# show that the restored tree equals the source. Everything lives under ./demo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

demo=$PWD/demo
rm -rf "$demo"
mkdir -p "$demo/photos/2024/summer" "$demo/photos/2025"
export COLDVAULT_REPO="$demo/vault"
printf 'demo-password\n' > "$demo/password"
export COLDVAULT_PASSWORD_FILE="$demo/password"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a sample tree to back up"
python3 - "$demo/photos" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
for i in range(40):
    d = os.path.join(root, "2024/summer" if i % 2 else "2025")
    with open(os.path.join(d, f"IMG_{i:04d}.jpg"), "wb") as f:
        f.write(rng.randbytes(rng.randint(10_000, 400_000)))
with open(os.path.join(root, "notes.txt"), "w") as f:
    f.write("family photos\n" * 100)
os.symlink("2025", os.path.join(root, "latest-year"))
PY
du -sh "$demo/photos"

step "coldvault init (encrypted local vault in $COLDVAULT_REPO)"
coldvault init

step "first backup"
coldvault backup dir "$demo/photos"

step "change one file, add one, back up again (only the changes are read)"
echo "a new note" >> "$demo/photos/notes.txt"
head -c 200000 /dev/urandom > "$demo/photos/2025/IMG_9999.jpg"
coldvault backup dir "$demo/photos"

step "coldvault snapshots"
coldvault snapshots

step "coldvault ls latest 2025"
coldvault ls latest 2025 | head -5

step "restore the latest snapshot and compare with the source"
coldvault restore dir latest --target "$demo/restored"
diff -r --no-dereference "$demo/photos" "$demo/restored"
echo "restored tree is identical to the source"

step "mount the vault and browse it (every snapshot, every day, every day's changes)"
mnt="$demo/mnt"
mkdir -p "$mnt"
coldvault mount "$mnt" --log "$demo/mount.log"
trap 'fusermount3 -u "$mnt" 2>/dev/null || true' EXIT
ls "$mnt/files/photos"
ls "$mnt/files/photos/snapshots"
echo "changes/$(ls "$mnt/files/photos/changes" | tail -1):"
ls -R "$mnt/files/photos/changes/$(ls "$mnt/files/photos/changes" | tail -1)" | head -8
echo "reading a file through the mount:"
head -c 60 "$mnt/files/photos/latest/notes.txt"; echo
cmp "$mnt/files/photos/latest/2025/IMG_9999.jpg" "$demo/photos/2025/IMG_9999.jpg" && echo "IMG_9999.jpg read through the mount is identical"
fusermount3 -u "$mnt"
trap - EXIT
echo "unmounted"
