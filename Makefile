# The two commands: `make run` and `make test`. Everything else is what they call.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
EXT_SOURCES := $(wildcard mcpfast_ext/*.pyx)
EXT_BUILT := $(VENV)/.extension-built
CONFIG ?=

NGINX := /usr/sbin/nginx

.PHONY: run test test-compiled test-pure ext lint bench bench-micro bench-deps node-tools clean

run: $(EXT_BUILT)
	$(PY) -m mcpfast serve $(if $(CONFIG),--config $(CONFIG))

test: $(EXT_BUILT) bench-deps node-tools
	$(VENV)/bin/ruff check mcpfast mcpfast_ext tests bench
	$(VENV)/bin/mypy mcpfast
	# The two passes are independent (each starts its own gateways on free ports): run
	# them side by side, each one's output printed whole when it ends.
	$(MAKE) --no-print-directory -j2 --output-sync=target test-compiled test-pure

# The compiled run fails if the extension is not what is running.
test-compiled: $(EXT_BUILT)
	MCPFAST_REQUIRE_EXTENSION=1 $(PY) -m pytest -q

test-pure: $(INSTALLED)
	MCPFAST_NO_EXTENSIONS=1 $(PY) -m pytest -q

$(INSTALLED): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	MCPFAST_BUILD_EXTENSION=no $(PY) -m pip install --quiet -e '.[test,dev,bench]'
	touch $@

ext: $(EXT_BUILT)

$(EXT_BUILT): $(INSTALLED) $(EXT_SOURCES)
	MCPFAST_BUILD_EXTENSION=yes $(PY) setup.py --quiet build_ext --inplace
	touch $@

# The benchmark suite compares against Debian's nginx; the harness test needs it too.
bench-deps: $(NGINX)

$(NGINX):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
	  || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null

# Node 22, the MCP conformance suite and the Inspector, pinned, into .tools/ (the
# conformance and Inspector tests drive the gateway with them).
node-tools:
	bash scripts/node-tools.sh

bench: $(EXT_BUILT) bench-deps
	$(PY) -m bench run

bench-micro: $(EXT_BUILT)
	$(PY) -m pytest bench/micro -q --benchmark-json=.benchmarks/micro.json
	$(PY) -m bench.micro.report .benchmarks/micro.json

lint: $(INSTALLED)
	$(VENV)/bin/ruff check mcpfast mcpfast_ext tests bench
	$(VENV)/bin/mypy mcpfast

clean:
	rm -rf build $(VENV) mcpfast_ext/*.so mcpfast_ext/*.c *.egg-info
