# Quick start: `make train` (the main job) and `make test` (the test suite).
# Both create .venv and install the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: train test test-fast bench horovod clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

train: $(STAMP)
	$(PY) train_local.py

test: $(STAMP)
	$(PY) -m pytest tests

# Benchmarks (not tests): the attention op, the data pipeline, full training steps.
bench: $(STAMP)
	$(PY) -m ops.bench
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train_step.py

# Horovod 0.28.1 built from source for this torch (CPU + gloo); the horovod tests run once it is there.
horovod: $(STAMP)
	bash scripts/build_horovod.sh $(PY)

clean:
	rm -rf $(VENV) .pytest_cache build outputs
