# `make demo` diarizes the example recording with the bundled model; `make test` runs the tests.
# Both create .venv with everything they need (torch pinned to the CPU 2.13.0 build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test benchmark clean

$(BIN)/diarize: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/diarize
	$(BIN)/diarize cluster examples/meeting.wav --out-dir runs/demo --out all --force \
		--plot runs/demo/meeting.png --ref examples/meeting.rttm

test: $(BIN)/diarize
	$(BIN)/python -m pytest -q

benchmark: $(BIN)/diarize
	$(BIN)/diarize benchmark --minutes 30 --json runs/benchmark-30min.json --force

clean:
	rm -rf $(VENV) runs .pytest_cache
