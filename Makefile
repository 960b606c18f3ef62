# Two commands on a fresh machine with Python 3.11: `make demo`, then `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: demo test zoo bench samples fuzz clean

# `make fuzz`: every harness of fuzz/ for FUZZ_SECONDS seconds each (six harnesses: 3 minutes by default).
FUZZ_SECONDS ?= 30

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

# Two workers for the two cores; --dist loadfile keeps each test file on one worker, so a
# file's module fixtures (Keras models built in subprocesses) are built once.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile

# The whole architecture zoo (tests/test_zoo.py; make test runs a subset): --dist loadscope keeps each
# net's test class on one worker, so each net is built once.
zoo: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadscope -m zoo tests/test_zoo.py

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

samples: $(VENV)/.installed
	$(PY) sample_ckpts/make_samples.py

# The harnesses need neither TensorFlow nor Keras: a fresh clone gets the package and atheris only.
$(VENV)/.fuzz-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[fuzz]"
	touch $@

# Prints each harness's executions and coverage; exits 1 if one found a crash, a hang (an input over
# 5 s) or a memory overrun (over 512 MiB): the input is then in fuzz/work/<harness>/artifacts/.
fuzz: $(VENV)/.fuzz-installed
	$(PY) -m fuzz.run_all --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache
