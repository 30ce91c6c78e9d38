# gradserve: `make serve` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve test lint bench docs image push clean

# One stamp per extra, rebuilt when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$*]'
	touch $@

$(VENV)/.stamp-base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

serve: $(VENV)/.stamp-base
	exec $(BIN)/gunicorn --config service/gunicorn.conf.py service.wsgi:app
# The example models (models/*.json) unless GRADSERVE_MODELS_DIR names another folder.
serve: export GRADSERVE_MODELS_DIR ?= models

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check .

# PyTorch only adds a column to bench/engine.py; `make bench BENCH_TORCH=` skips it. Pin the
# CPU build's version: an unpinned torch from PyPI pulls a multi-GB CUDA build.
BENCH_TORCH ?= torch==2.13.0
bench: $(VENV)/.stamp-bench
	$(if $(BENCH_TORCH),$(BIN)/python -m pip install -q '$(BENCH_TORCH)' || echo "$(BENCH_TORCH) not installed: bench/engine.py runs without its torch column")
	$(BIN)/python bench/engine.py $(BENCH_ARGS)
	$(BIN)/python bench/http.py $(BENCH_ARGS)
	$(BIN)/python bench/interop.py $(if $(findstring --quick,$(BENCH_ARGS)),--quick)

# Rewrite README.md's generated tables (ops, error codes, settings).
docs: $(VENV)/.stamp-base
	$(BIN)/python -m service.reference

# The container image, tagged with the package's version and latest. Needs a Docker engine
# (none runs on the development machines). For a cluster, name your registry and push:
#   make image push IMAGE=registry.example.com/team/gradserve
# then set that name in deploy/k8s/deployment.yaml's `image:`.
IMAGE   ?= gradserve
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	docker build -t $(IMAGE):$(VERSION) .
	docker tag $(IMAGE):$(VERSION) $(IMAGE):latest

push:
	docker push $(IMAGE):$(VERSION)
	docker push $(IMAGE):latest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
