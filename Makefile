# Two commands on a fresh machine with Python 3.11: `make demo`, then `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: demo test check zoo bench samples clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[tf,test]"
	touch $@

demo: $(VENV)/.installed
	@echo "== 1. Diagnose: the seed's network saved by a Saver over the trainable variables only =="
	-$(BIN)/ckptdoctor inspect sample_ckpts/seed-trainables --match 'moving|gamma'
	@echo
	@echo "== 2. The seed as written: statistics stored, but stale; the restored network in inference mode =="
	@$(PY) sample_ckpts/evaluate.py sample_ckpts/seed
	@echo
	@echo "== 2b. Stale statistics are found with data: inspect --data (a dry-run repair, nothing written) =="
	-$(BIN)/ckptdoctor inspect sample_ckpts/seed --data sample_ckpts/seed/X.npy --stats=False --match 'moving'
	@echo
	@echo "== 3. Repair: recompute the BN statistics from X.npy in training mode (output in demo_out/) =="
	@mkdir -p demo_out
	$(BIN)/ckptdoctor repair sample_ckpts/seed --data sample_ckpts/seed/X.npy --batch-size 1000 \
		--output demo_out/seed-repaired --force
	@echo
	@echo "== 4. The repaired checkpoint restored in inference mode =="
	@$(PY) sample_ckpts/evaluate.py sample_ckpts/seed demo_out/seed-repaired
	@echo
	@echo "== 5. A TF2 CheckpointManager directory (Keras 3, custom loop): the model comes from a factory =="
	cd sample_ckpts/tf2-manager && ../../$(BIN)/ckptdoctor repair ckpts --data X.npy --graph model_factory:build \
		--batch-size 256 --output ../../demo_out/tf2-repaired --force

# Two workers for the two cores; --dist loadfile keeps each test file on one worker, so a
# file's module fixtures (Keras models built in subprocesses) are built once.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile

# Lint and format (ruff), types (mypy), the architecture's import contracts (import-linter, see
# pyproject.toml), and no function over 120 lines. All configured in pyproject.toml.
check: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(PY) tools/check_lengths.py

# The whole architecture zoo (tests/test_zoo.py; make test runs a subset): --dist loadscope keeps each
# net's test class on one worker, so each net is built once.
zoo: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadscope -m zoo tests/test_zoo.py

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

samples: $(VENV)/.installed
	$(PY) sample_ckpts/make_samples.py

clean:
	rm -rf $(VENV) .pytest_cache
