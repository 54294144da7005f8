# KneeAI: the two commands are `make serve` and `make test` (see README.md).
PY := .venv/bin/python
STUDIES ?=
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: setup serve test bench bench-measurements bench-clicks train-from-labels evaluate clean
LABELS ?= ../shared/data/labels/oai_zib
CONVENTION ?= oai_zib
OUT ?= .kneeai/train
FOLD ?= 0

setup:
	bash scripts/setup_env.sh

# Starts the MONAI Label server; with no STUDIES it first generates the embedded sample dataset.
serve: setup
	bash scripts/serve.sh "$(STUDIES)" "$(HOST)" "$(PORT)"

test: setup
	$(PY) -m pytest Testing -q

bench: setup
	$(PY) Testing/benchmarks/server_benchmark.py

# Cartilage thickness: phantoms with known thickness, robustness and regional means on real label maps (~15 min).
bench-measurements: setup
	$(PY) Testing/benchmarks/measurements_benchmark.py

# Click-to-update: Dice after each simulated click and latency on the real DESS knee.
bench-clicks: setup
	$(PY) Testing/benchmarks/click_benchmark.py

# A model from a folder of label maps (images synthesised from them), through the server's training task.
train-from-labels: setup
	$(PY) MonaiLabelApp/train_from_label_maps.py $(LABELS) --convention $(CONVENTION) --out $(OUT) --fold $(FOLD) --folds 5

# Held-out knees of that fold (synthesised, fixed seed) and DESS echo 1 vs echo 2 agreement.
evaluate: setup
	$(PY) MonaiLabelApp/evaluate.py --model-dir $(OUT)/model --labels $(LABELS) --convention $(CONVENTION) \
	  --split $(OUT)/cv_split.json --fold $(FOLD) --seed 1234 --out $(OUT)/eval \
	  --dess-echo1 ../shared/data/mri/dess_3t_echo1.nii.gz --dess-echo2 ../shared/data/mri/dess_3t_echo2.nii.gz

clean:
	rm -rf .kneeai MonaiLabelApp/model
