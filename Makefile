# KneeAI: the two commands are `make serve` and `make test` (see README.md).
PY := .venv/bin/python
STUDIES ?=
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: setup serve test bench clean

setup:
	bash scripts/setup_env.sh

# Starts the MONAI Label server; with no STUDIES it first generates the embedded sample dataset.
serve: setup
	bash scripts/serve.sh "$(STUDIES)" "$(HOST)" "$(PORT)"

test: setup
	$(PY) -m pytest Testing -q

bench: setup
	$(PY) Testing/benchmarks/server_benchmark.py

clean:
	rm -rf .kneeai MonaiLabelApp/model
