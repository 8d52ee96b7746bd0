# Quick start: `make train` (the main job) and `make test` (the test suite).
# Both create .venv and install the pinned requirements on first use (`make test` adds requirements-dev.txt).
# Cluster: `make image` builds the image Determined runs the trial in (docs/cluster.md); `make gpu-check`
# checks a GPU machine (CUDA tests, kernel accuracy, training throughput).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
DEV_STAMP := $(VENV)/.requirements-dev-installed

# The image: name and tag, the docker command, and the GPU architectures the kernel is compiled for.
IMAGE ?= deformable-detr:0.38.1-cu130
DOCKER ?= docker
CUDA_ARCHS ?= 8.0;8.6;8.9;9.0;10.0;12.0+PTX

.PHONY: train test test-fast bench horovod image gpu-check clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# requirements-dev.txt includes requirements.txt: a change of either reinstalls.
$(DEV_STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP) $@

train: $(STAMP)
	$(PY) train_local.py

test: $(DEV_STAMP)
	$(PY) -m pytest tests

# Benchmarks (not tests): the attention op, the data pipeline, full training steps.
bench: $(STAMP)
	$(PY) -m ops.bench
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train_step.py

# On a GPU machine: the CUDA tests, the kernel against the reference, fp32 vs bf16 training throughput.
gpu-check: $(DEV_STAMP)
	$(PY) benchmarks/gpu_check.py

image:
	$(DOCKER) build --build-arg TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" --tag $(IMAGE) .

# Horovod 0.28.1 built from source for this torch (CPU + gloo); the horovod tests run once it is there.
horovod: $(STAMP)
	bash scripts/build_horovod.sh $(PY)

clean:
	rm -rf $(VENV) .pytest_cache build outputs
