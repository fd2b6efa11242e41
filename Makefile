# fastio: `make test` and `make bench` do all set-up from a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-stamp
BENCH_DEPS := $(VENV)/.bench-deps-stamp

BUILD_DEPS := "setuptools>=64" "Cython>=3.0.8" wheel
TEST_DEPS  := "pytest>=7" "pytest-timeout>=2" "hypothesis>=6" "pika>=1.3" uvloop
BENCH_PKGS := uvloop

.PHONY: all venv build test bench bench-loop clean

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

test: build
	$(VPY) -m pytest $(PYTEST_ARGS)

bench: build $(BENCH_DEPS)
	$(VPY) -m benchmarks $(BENCH_ARGS)

bench-loop: build $(BENCH_DEPS)
	$(VPY) benchmarks/bench_loop.py $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info fastio/*.so src/*.c src/*.html .pytest_cache .hypothesis
