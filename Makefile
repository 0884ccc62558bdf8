# v6gen developer entry points. `make test` is what CI runs (as root, lab included).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help deps venv lint typecheck unit dbus lab test bench demo clean deb deb-deps test-system-python lab-deb lab-installed

help:
	@echo "make test   lint, type check, unit, D-Bus and lab tiers (root for the lab)"
	@echo "make demo   bring up the lab and show a LAN neighbour reaching a container (root)"
	@echo "make bench  benchmarks in the lab; writes bench/results.json (root)"
	@echo "make lint / typecheck / unit / dbus / lab   one part of make test"

# System packages the tests need; the lab installs its own daemons (docker.io, networkd-dispatcher,
# ...) when missing. Root only; a non-root run just checks what is there.
deps:
	@missing=""; for p in iproute2 dbus systemd systemd-container make libndp-tools; do \
	  dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages:$$missing (run make deps as root)"; fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard bench)
	$(VENV)/bin/ruff format --check src tests $(wildcard bench)

# bench/ imports the lab as tests.lab.*: checked on its own so module names don't clash.
typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src tests
	$(if $(wildcard bench),$(VENV)/bin/mypy --strict bench)

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

dbus: $(STAMP)
	$(PY) -m pytest -q tests/dbus

lab: $(STAMP) deps
	$(PY) -m pytest -q tests/lab

# The Debian package's acceptance (root): built as `make deb` does (nocheck, cached by content),
# then installed, flapped, upgraded, removed and purged inside the lab's overlays.
lab-deb: $(STAMP) deps
	$(PY) -m pytest -q tests/lab/test_deb.py

# The lab tier against the installed package, as autopkgtest runs it.
lab-installed:
	V6GEN_LAB_INSTALLED=1 debian/tests/lab -q

# Debian's python first: it installs the packaged libraries (python3-typer, ...) that the fault
# tier's unprivileged runs of /usr/bin/python3 -m v6gen need too.
# --durations: where a run's time went, in CI's log, for keeping make test short.
# Each step's time, and each pytest tier's, ends the run (tests/timed.py):
# every change can say what it added to the budget README states.
TIMES := build/test-times.txt
TIMED := V6GEN_TIER_TIMES=$(CURDIR)/$(TIMES) $(PY) -m tests.timed
test: deps $(STAMP)
	@mkdir -p build && rm -f $(TIMES) build/system-python.xml build/pytest.xml
	$(TIMED) lint $(MAKE) --no-print-directory lint
	$(TIMED) typecheck $(MAKE) --no-print-directory typecheck
	$(TIMED) system-python debian/tests/run-system-python -q --junitxml=$(CURDIR)/build/system-python.xml
	$(TIMED) pytest $(PY) -m pytest -q --durations=25 --junitxml=$(CURDIR)/build/pytest.xml tests
	@V6GEN_TIER_TIMES=$(CURDIR)/$(TIMES) $(PY) -m tests.timed --summary

bench: $(STAMP) deps
	$(PY) -m bench

demo: $(STAMP) deps
	$(PY) -m tests.lab.demo

# The .deb, built from a copy of the tree as it is (committed or not), checked by lintian.
DEB_DIR := build/deb

deb-deps:
	@if ! command -v dpkg-checkbuilddeps >/dev/null 2>&1 || ! dpkg-checkbuilddeps 2>/dev/null \
	    || ! command -v lintian >/dev/null 2>&1; then \
	  apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    build-essential dpkg-dev lintian && \
	  DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q --no-install-recommends ./; \
	fi

deb: deb-deps
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/v6gen
	git ls-files -z --cached --others --exclude-standard \
	  | tar --null --ignore-failed-read -T - -cf - | tar -C $(DEB_DIR)/v6gen -xf -
	cd $(DEB_DIR)/v6gen && env -i HOME="$$HOME" PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
	  DEB_BUILD_OPTIONS="$(DEB_BUILD_OPTIONS)" dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --display-info $(DEB_DIR)/v6gen_*.changes
	@echo "built: $$(ls $(DEB_DIR)/*.deb)"

# The unit and D-Bus tiers under Debian's /usr/bin/python3 and Debian 12's own libraries.
test-system-python:
	debian/tests/run-system-python -q

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
