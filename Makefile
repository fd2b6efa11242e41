# fastio: `make test` and `make bench` do all set-up from a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-stamp
BENCH_DEPS := $(VENV)/.bench-deps-stamp

# The dependencies are listed once, in pyproject.toml: the build system's
# requirements and the extras `dev` (tests, type checkers; includes `test`)
# and `bench`. .ci/requirements prints them for pip.
PIP := $(VPY) -m pip install -q --disable-pip-version-check

.PHONY: all venv build develop test bench cluster cpython-asyncio broker-deps wrk-deps wheel wheels-all sdist typecheck sanitize valgrind clean

all: build

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(VPY) Makefile pyproject.toml
	$(VPY) .ci/requirements build dev > $(VENV)/requirements-dev.txt
	$(PIP) wheel -r $(VENV)/requirements-dev.txt
	touch $@

$(BENCH_DEPS): $(DEPS) pyproject.toml
	$(VPY) .ci/requirements bench > $(VENV)/requirements-bench.txt
	$(PIP) -r $(VENV)/requirements-bench.txt
	touch $@

venv: $(DEPS)

build: $(DEPS)
	$(VPY) setup.py -q build_ext --inplace

# An editable install of this checkout into the venv: `$(VENV)/bin/fastio`
# and `import fastio` from any directory use the source tree. The extensions
# are built in place (re-run after changing src/).
develop: $(DEPS)
	$(PIP) --no-build-isolation --no-deps -e .

test: build broker-deps
	$(VPY) -m pytest $(PYTEST_ARGS)

# The RabbitMQ tests and benchmark start private nodes of the Debian
# package's broker. Installed here when missing and we are root; otherwise
# say how (the tests then skip, or fail under FASTIO_REQUIRE_BROKER=1).
broker-deps:
	@if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ]; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing rabbitmq-server (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server; \
	else \
	    echo "== rabbitmq-server is not installed: the RabbitMQ tests will skip."; \
	    echo "   Install it with: sudo apt-get install -y rabbitmq-server"; \
	fi

# The asyncio suite's HTTP load generator is wrk (Debian package `wrk`),
# installed like the broker; without it the aiohttp cases are skipped.
wrk-deps:
	@if command -v wrk >/dev/null 2>&1; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing wrk (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; \
	else \
	    echo "== wrk is not installed: the aiohttp benchmark will skip."; \
	    echo "   Install it with: sudo apt-get install -y wrk"; \
	fi

bench: build $(BENCH_DEPS) broker-deps wrk-deps
	$(VPY) -m benchmarks $(BENCH_ARGS)

# A private 3-node RabbitMQ cluster to try things on: prints its URLs,
# runs until Ctrl-C, then stops its own nodes (by pid) and deletes their data.
# The cluster tests (tests/test_rabbitmq_cluster.py) start their own.
cluster: build broker-deps
	$(VPY) tests/cluster.py

# CPython's asyncio test modules on fastio's loop and on stock asyncio, with
# interpreter PY (default: the venv's; e.g. PY=$$(pyenv prefix 3.13)/bin/python).
# Writes benchmarks/results/cpython_asyncio-<X.Y>.md.
PY ?= $(VPY)
cpython-asyncio: build
	.ci/cpython-asyncio $(PY) $(VPY)

# A manylinux2014 wheel, repaired with auditwheel, tested in a clean venv
# with the `dev` extra's requirements.
wheel:
	.ci/wheel $(PYTHON)

# The same for every CPython 3.9-3.13 that pyenv has here.
wheels-all:
	@set -e; for v in 3.9 3.10 3.11 3.12 3.13; do \
	    py=$$(pyenv prefix $$v 2>/dev/null)/bin/python; \
	    if [ -x "$$py" ]; then .ci/wheel "$$py"; else echo "== skip $$v: not in pyenv"; fi; \
	done

# The suite against an ASan + UBSan build of the extensions (build/sanitize).
sanitize: $(DEPS)
	VPY=$(abspath $(VPY)) .ci/sanitize $(PYTEST_ARGS)

# The stress driver under valgrind memcheck (report: build/valgrind.log).
valgrind: build
	VPY=$(abspath $(VPY)) .ci/valgrind

sdist: $(DEPS)
	$(PIP) build
	$(VPY) -m build --sdist --outdir dist .

# mypy on the package, then a user's script under mypy --strict and pyright strict.
typecheck: build
	$(VPY) -m mypy
	$(VPY) -m pytest -q tests/test_typing.py

clean:
	rm -rf build dist wheelhouse *.egg-info fastio/*.so fastio/_impl/*.so src/*.c src/*.html .pytest_cache .hypothesis
