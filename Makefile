# Two commands on a fresh machine with Python 3.11: `make demo`, then `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: demo test test-slow check zoo bench samples fuzz clean

# `make fuzz`: every harness of fuzz/ for FUZZ_SECONDS seconds each (seven harnesses: 3.5 minutes by default).
FUZZ_SECONDS ?= 30
# FUZZ_SEED=N fixes the fuzzers' random seed (CI: runs start with the same inputs, then diverge); empty: random.
FUZZ_SEED ?=

# _wire.c: the optional C decoders (ckptdoctor/readers/_wire.c), built in place by the editable install.
$(VENV)/.installed: pyproject.toml ckptdoctor/readers/_wire.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[tf,test]"
	touch $@

# The demo tells the story of the bundled seed checkpoint. inspect exits 1 when it finds an error-level
# problem: the demo expects that where it shows one, says so in words, and stops on any other exit code.
DEMO_OUT ?= demo_out
EXPECT_1 = code=$$?; if [ $$code -ne 1 ]; then echo "demo: expected exit code 1, got $$code"; exit 1; fi; echo

demo: $(VENV)/.installed
	@mkdir -p $(DEMO_OUT)
	@echo "== 1. Diagnose: the seed's network saved by a Saver over the trainable variables only =="
	@echo "$$ ckptdoctor inspect sample_ckpts/seed-trainables --match 'moving|gamma'"
	@$(BIN)/ckptdoctor inspect sample_ckpts/seed-trainables --match 'moving|gamma'; $(EXPECT_1) \
		"-> exit code 1, as expected: the BN moving statistics were never saved (bn-stats-missing)"
	@echo
	@echo "== 2. The seed as written: statistics stored, but stale; the restored network in inference mode =="
	@$(PY) sample_ckpts/evaluate.py sample_ckpts/seed
	@echo
	@echo "== 3. Stale statistics are found with data: inspect --data (a dry-run repair, nothing written) =="
	@echo "$$ ckptdoctor inspect sample_ckpts/seed --data sample_ckpts/seed/X.npy --stats=False --match moving \\"
	@echo "      --report $(DEMO_OUT)/seed-inspect.html"
	@$(BIN)/ckptdoctor inspect sample_ckpts/seed --data sample_ckpts/seed/X.npy --stats=False --match 'moving' \
		--report $(DEMO_OUT)/seed-inspect.html --force; $(EXPECT_1) \
		"-> exit code 1, as expected: the statistics lag the weights (bn-stats-stale), though they look healthy"
	@echo
	@echo "== 4. Repair: recompute the BN statistics from X.npy in training mode (output in $(DEMO_OUT)/) =="
	@echo "$$ ckptdoctor repair sample_ckpts/seed --data sample_ckpts/seed/X.npy --batch-size 1000 \\"
	@echo "      --output $(DEMO_OUT)/seed-repaired --report $(DEMO_OUT)/seed-repair.html"
	@$(BIN)/ckptdoctor repair sample_ckpts/seed --data sample_ckpts/seed/X.npy --batch-size 1000 \
		--output $(DEMO_OUT)/seed-repaired --report $(DEMO_OUT)/seed-repair.html --force
	@echo
	@echo "== 5. The repaired checkpoint restored in inference mode =="
	@$(PY) sample_ckpts/evaluate.py sample_ckpts/seed $(DEMO_OUT)/seed-repaired
	@echo
	@echo "== 6. A TF2 CheckpointManager directory (Keras 3, custom loop): the model comes from a factory =="
	@echo "$$ cd sample_ckpts/tf2-manager && ckptdoctor repair ckpts --data X.npy --graph model_factory:build \\"
	@echo "      --batch-size 256 --output $(DEMO_OUT)/tf2-repaired"
	@cd sample_ckpts/tf2-manager && $(abspath $(BIN))/ckptdoctor repair ckpts --data X.npy \
		--graph model_factory:build --batch-size 256 --output $(abspath $(DEMO_OUT))/tf2-repaired --force
	@echo
	@echo "== 7. The reports: self-contained pages, open them in any browser (no network needed) =="
	@echo "   $(DEMO_OUT)/seed-inspect.html   the diagnosis against the data: which BN layers are off, by how much"
	@echo "   $(DEMO_OUT)/seed-repair.html    what the repair changed per layer, and the gaps before and after"

# Two workers for the two cores; --dist loadfile keeps each test file on one worker, so a
# file's module fixtures (Keras models built in subprocesses) are built once.
# `make test`: every test but the breadth suites marked slow; `make test-slow` runs those (TF1 graph modes,
# Keras format variants, data sources, the zoo subset). CI runs both.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 -m "not slow"

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 -m slow

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

# The harnesses need neither TensorFlow nor Keras: a fresh clone gets the package and atheris only.
$(VENV)/.fuzz-installed: pyproject.toml ckptdoctor/readers/_wire.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[fuzz]"
	touch $@

# Prints each harness's executions and coverage; exits 1 if one found a crash, a hang (an input over
# 5 s) or a memory overrun (over 512 MiB): the input is then in fuzz/work/<harness>/artifacts/.
fuzz: $(VENV)/.fuzz-installed
	FUZZ_SEED=$(FUZZ_SEED) $(PY) -m fuzz.run_all --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache
