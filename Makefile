# Two commands for a fresh machine: `make run` and `make test`. Both create .venv and install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch: from a local wheel folder when the machine has one, else from PyTorch's CPU index.
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
PYTEST_ARGS ?=
# Real Prometheus and Alertmanager binaries for the tests, which start their own on free loopback ports. As root
# (CI) `make test` installs the Debian packages when a binary is missing, then stops the services Debian starts
# on install (Prometheus would hold 9090); elsewhere those tests skip and say how to get them.
TEST_TOOLS := prometheus prometheus-alertmanager
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300

.PHONY: install run test test-tools lint clean bench

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "inferops needs Python >= 3.11, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing inferops and its dev extra into $(VENV) (first time: a few minutes)"
	$(BIN)/pip install --quiet $(TORCH_SOURCE) -c constraints.txt -e '.[dev,cpu]'
	@$(BIN)/python -c 'import torch; assert "+cpu" in torch.__version__ or not torch.version.cuda, "a CUDA torch was installed: check constraints.txt"' 
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/inferops demo

lint: $(STAMP)
	$(BIN)/ruff check flows serving tasks cli tests benchmarks
	$(BIN)/ruff format --check flows serving tasks cli tests benchmarks
	$(BIN)/mypy flows serving tasks cli

test-tools:
	@if [ "$$(id -u)" = 0 ] && ! { command -v prometheus && command -v prometheus-alertmanager; } >/dev/null; then \
		echo "==> installing $(TEST_TOOLS) for the tests (apt-get)"; \
		$(APT_INSTALL) $(TEST_TOOLS) || { apt-get update -q && $(APT_INSTALL) $(TEST_TOOLS); } || exit 1; \
		if [ -d /run/systemd/system ]; then systemctl disable --now $(TEST_TOOLS) || true; fi; \
	fi

test: $(STAMP) lint test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .inferops .pytest_cache .mypy_cache .ruff_cache
