# The two commands of the README: `make demo` and `make test`. Each creates or reuses .venv first and installs
# everything it needs (Python packages, and Debian packages when missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cliptune-installed
LOCK := requirements.lock
UV_VERSION := 0.13.9
TOOLS := .venv-tools
LATEST := .venv-latest
APT_DEMO := fonts-noto-color-emoji
APT_TEST := $(APT_DEMO) chromium chromium-driver openclipart-svg
# lite's aligned heads are pre-trained on these (never on the emoji data, which is only the overlap check's input)
APT_PRETRAIN := $(APT_DEMO) openclipart-png openclipart-svg adwaita-icon-theme unicode-data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: demo demo-quick test test-all test-latest lock venv apt-demo apt-test apt-pretrain pretrain-lite clean

venv: $(STAMP)

# Exact versions from the committed lock (pip and setuptools included), then the package itself without resolving
# anything; `pip check` fails the set-up if the lock no longer satisfies pyproject.toml.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$$(grep -E '^pip==' $(LOCK))"
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $(STAMP)

# Re-resolves the lock to the newest versions the ranges in pyproject.toml allow (then run `make test`).
lock:
	@test -x $(TOOLS)/bin/uv || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q uv==$(UV_VERSION); }
	$(TOOLS)/bin/uv pip compile pyproject.toml requirements/build.in --extra test --python-version 3.11 \
	  --upgrade --output-file $(LOCK)

# Drift check, not CI: a separate venv with the newest versions the ranges allow, running the fast tests.
test-latest: apt-test
	@test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip setuptools
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/resolved.txt
	@echo "resolved versions: $(LATEST)/resolved.txt (diff against $(LOCK) to see what moved)"
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# Installs the Debian packages in APT (skipped when all are present).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

apt-demo:
	$(call apt_install,$(APT_DEMO))

apt-test:
	$(call apt_install,$(APT_TEST))

apt-pretrain:
	$(call apt_install,$(APT_PRETRAIN))

# Rebuilds src/cliptune/models/pretrained/lite{0,1,2}-heads.{safetensors,json} from data this machine builds.
pretrain-lite: venv apt-pretrain
	$(VENV)/bin/cliptune data build emoji
	$(VENV)/bin/cliptune data build icons
	$(VENV)/bin/cliptune data build openclipart
	$(VENV)/bin/cliptune pretrain-lite --tower b0
	$(VENV)/bin/cliptune pretrain-lite --tower b1
	$(VENV)/bin/cliptune pretrain-lite --tower b2

demo: venv apt-demo
	$(VENV)/bin/cliptune demo

demo-quick: venv apt-demo
	$(VENV)/bin/cliptune demo --quick

test: venv apt-test
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: venv apt-test
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) $(LATEST) build *.egg-info
