# fastio: `make test` and `make bench` do all set-up from a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-stamp
BENCH_DEPS := $(VENV)/.bench-deps-stamp

BUILD_DEPS := "setuptools>=64" "Cython>=3.0.8" wheel
TEST_DEPS  := "pytest>=7" "pytest-timeout>=2" "hypothesis>=6" "pika>=1.3" uvloop mypy trustme
BENCH_PKGS := uvloop matplotlib "pika>=1.3" aio-pika

.PHONY: all venv build test bench broker-deps wheel wheels-all sdist typecheck sanitize valgrind clean

all: build

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(VPY) Makefile
	$(VPY) -m pip install -q --disable-pip-version-check $(BUILD_DEPS) $(TEST_DEPS)
	touch $@

$(BENCH_DEPS): $(DEPS)
	$(VPY) -m pip install -q --disable-pip-version-check $(BENCH_PKGS)
	touch $@

venv: $(DEPS)

build: $(DEPS)
	$(VPY) setup.py -q build_ext --inplace

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

bench: build $(BENCH_DEPS) broker-deps
	$(VPY) -m benchmarks $(BENCH_ARGS)

# A manylinux2014 wheel, repaired with auditwheel, tested in a clean venv.
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
	$(VPY) -m pip install -q --disable-pip-version-check build
	$(VPY) -m build --sdist --outdir dist .

typecheck: build
	$(VPY) -m pip install -q --disable-pip-version-check mypy
	$(VPY) -m mypy

clean:
	rm -rf build dist wheelhouse *.egg-info fastio/*.so src/*.c src/*.html .pytest_cache .hypothesis
