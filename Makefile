# One command runs the appliance, one runs the tests; both set themselves up.
#   make run    - venv + install, then twistd -n p2pnet on the embedded defaults
#   make test   - venv + install + interop clients (Debian packages), then the whole suite
#                 (test/unit and test/interop)
#   make test-unit - the unit tests only
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the interop tests drive: coturn's turnutils_*, the classic stun client,
# ffmpeg (encoder output for the Annex-B parser and the KVM node's video sources),
# chromium (the status page and the browser TURN tester, driven by Playwright),
# redis-server (the shared store of several nodes; the tests start their own),
# bpftool (the fast path tests list the kernel's BPF links).
SYSTEM_PACKAGES := coturn stun-client ffmpeg chromium redis-server bpftool
# What builds the TURN fast path's BPF program (docs/fastpath.md): Debian's clang (with
# its BPF target) and libbpf's headers (libbpf-dev; its libbpf1 is what p2pnet loads).
FASTPATH_PACKAGES := clang libbpf-dev
FASTPATH_OBJECT := p2pnet/fastpath/turn_fastpath.bpf.o

.PHONY: run test test-unit lint mypy bench system-deps fastpath-deps fastpath venv clean

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Install the Debian packages of $(1) that are missing (apt only when something is).
define apt-install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

system-deps:
	$(call apt-install,$(SYSTEM_PACKAGES))

fastpath-deps:
	$(call apt-install,$(FASTPATH_PACKAGES))

# The fast path's program, compiled from source here (never downloaded).
$(FASTPATH_OBJECT): p2pnet/fastpath/turn_fastpath.bpf.c
	clang -O2 -g -Wall -target bpf -I/usr/include/$$(gcc -dumpmachine) -c $< -o $@

fastpath: fastpath-deps $(FASTPATH_OBJECT)

# The fast path is optional at run time (fast-path = auto): it needs root to load, so it
# is built when make runs as root; a machine that cannot build it still runs, and logs
# why the Python path relays everything.
run: $(STAMP)
	-@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory fastpath; fi
	$(VENV)/bin/twistd -n p2pnet $(ARGS)

test: $(STAMP) system-deps fastpath
	# No --jobs: trial starts its workers as a script from twisted/trial/_dist/, whose own
	# `test` package would shadow ours.
	$(PY) -m twisted.trial $(or $(TESTS),test)

# The unit tests alone: no socket, no subprocess, no real time; seconds.
test-unit: $(STAMP)
	$(PY) -m twisted.trial test.unit

lint: $(STAMP)
	$(VENV)/bin/ruff check p2pnet test bench twisted docs/examples
	$(VENV)/bin/mypy

# Type checking with the mypy-zope plugin; settings in pyproject.toml (every module is
# checked).
mypy: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP) system-deps
	$(PY) bench/stun_bench.py
	$(PY) bench/turn_bench.py
	$(PY) bench/rendezvous_bench.py
	$(PY) bench/gateway_bench.py
	$(PY) bench/ice_bench.py
	$(PY) bench/node_bench.py
	$(PY) bench/node_e2e_bench.py
	$(PY) bench/cluster_bench.py

clean:
	rm -rf $(VENV) _trial_temp* build *.egg-info
