# The two set-up commands of the README, each enough on a fresh Debian machine (as root):
#   make demo   install what is missing, back up a sample tree to a local vault, restore it
#   make test   install what is missing and run the whole test suite
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: deps demo test test-fast bench clean

deps:
	@./scripts/install-deps.sh

demo: deps
	@./scripts/demo.sh

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# Two workers (pytest-xdist), one per core: most of a test's time is spent waiting on
# subprocesses, FUSE and zfs-fuse, so two halve the wall time. TEST_JOBS=0 runs in one process.
TEST_JOBS ?= 2
test: deps
	@$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist worksteal tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

bench: deps
	$(PY) bench/bench_backup.py

clean:
	rm -rf demo .pytest_cache bench/work
