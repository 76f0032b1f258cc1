# tunewire's front door. `make run` and `make test` do their own set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export TUNEWIRE_HOME ?= $(CURDIR)/.tunewire
TINY_MODEL := $(TUNEWIRE_HOME)/models/tiny
INSTALLED := $(VENV)/.installed
GENERATED := gen/tunewire/v1/.generated
PROTOS := $(wildcard protos/tunewire/v1/*.proto)
PYTEST_ARGS ?=

.PHONY: setup protos proto-deps blas model lint lint-proto test run bench clean

setup: $(INSTALLED) blas model

# Code generation needs grpcio-tools before the package can be installed
# (tunewire.v1 lives in gen/), so the venv is bootstrapped in two steps.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet 'grpcio-tools>=1.62' 'googleapis-common-protos>=1.63'

protos: $(GENERATED)
$(GENERATED): $(PROTOS) | $(VENV)/bin/python
	rm -rf gen && mkdir -p gen/tunewire/v1
	$(PY) -m grpc_tools.protoc -Iprotos -I$(SITE) --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch $@

$(INSTALLED): pyproject.toml $(GENERATED)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

# OpenBLAS makes mlx's CPU matmuls ~40x faster on Linux; optional everywhere.
blas: | $(VENV)/bin/python
	@sh scripts/install-openblas.sh

model: $(TINY_MODEL)/config.json
$(TINY_MODEL)/config.json: $(INSTALLED)
	$(VENV)/bin/tunewire model tiny $(TINY_MODEL)

# googleapis protos our files import, copied from googleapis-common-protos so
# that buf needs no network access.
proto-deps: | $(VENV)/bin/python
	mkdir -p build/proto-deps/google/api build/proto-deps/google/rpc
	cp $(SITE)/google/api/annotations.proto $(SITE)/google/api/http.proto build/proto-deps/google/api/
	cp $(SITE)/google/rpc/status.proto build/proto-deps/google/rpc/

lint-proto: proto-deps
	npx --yes @bufbuild/buf lint protos

lint: $(INSTALLED) lint-proto
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

run: setup
	$(VENV)/bin/tunewire demo

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf gen build dist *.egg-info .pytest_cache .ruff_cache bench/.work
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
