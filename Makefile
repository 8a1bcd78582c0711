# hubfleet — the two commands of the quickstart are `make demo` and `make test`.
PYTHON   ?= python3
VENV     ?= .venv
# The environment user servers run from: built from Debian's /usr/bin/python3 (not a Python under /root)
# so that every Unix user can read it.
USER_ENV ?= /opt/hubfleet/user-env
USER_PY  ?= /usr/bin/python3
CHP_VERSION = 5.3.0

BIN = $(VENV)/bin

.PHONY: setup demo test lint bench clean system-packages

# What hubfleet adds to every user environment's server configuration (see src/hubfleet/envs/).
SERVER_CONFIG = src/hubfleet/envs/jupyter_server_config.json
USER_SERVER_CONFIG = $(USER_ENV)/etc/jupyter/jupyter_server_config.d/hubfleet.json

setup: system-packages $(VENV)/.installed $(USER_ENV)/.installed $(USER_SERVER_CONFIG)

# Debian packages hubfleet uses at run time (root only; skipped when present): ACLs for shared folders, XFS tools
# for home quotas.
system-packages:
	@if [ "$$(id -u)" = 0 ] && { ! command -v setfacl >/dev/null || [ ! -x /usr/sbin/mkfs.xfs ]; }; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq acl xfsprogs >/dev/null; fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	npm install --silent --no-audit --no-fund --prefix $(VENV) configurable-http-proxy@$(CHP_VERSION)
	touch $@

# Students' `hubfleet-assignment` (fetch/submit): one standard-library file, run by the env's Python.
STUDENT_CMD = src/hubfleet/edu/exchange/student.py

$(USER_ENV)/.installed: requirements/user-env.txt $(STUDENT_CMD)
	$(USER_PY) -m venv $(USER_ENV)
	$(USER_ENV)/bin/pip install -q --upgrade pip
	$(USER_ENV)/bin/pip install -q -r requirements/user-env.txt
	{ echo '#!$(USER_ENV)/bin/python'; cat $(STUDENT_CMD); } > $(USER_ENV)/bin/hubfleet-assignment
	chmod 0755 $(USER_ENV)/bin/hubfleet-assignment
	touch $@

$(USER_SERVER_CONFIG): $(SERVER_CONFIG) $(USER_ENV)/.installed
	install -D -m 0644 $(SERVER_CONFIG) $@

# Runs the demo fleet in the foreground with a live status view (Ctrl-C stops it).
demo: setup
	$(BIN)/hubfleet validate examples/fleet.yaml
	$(BIN)/hubfleet up examples/fleet.yaml

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs
	$(BIN)/lint-imports

# Two workers by default (TEST_WORKERS=0 runs the suite in one process): most of a test's time is spent waiting on
# the hubs, servers and kernels it starts.
TEST_WORKERS ?= 2

test: setup lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# Baselines (ltiauthenticator) go into .venv only here; nbgrader gets a virtualenv of its own (bench/grading.py).
bench: setup
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python bench/spawn.py
	$(BIN)/python bench/storm.py
	$(BIN)/python bench/dask.py
	$(BIN)/python bench/lti.py
	$(BIN)/python bench/grading.py
	$(BIN)/python bench/usage.py
	$(BIN)/python bench/upstream.py
	$(BIN)/python bench/envs.py

clean:
	rm -rf $(VENV) .hubfleet
