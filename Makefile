# Two commands on a fresh machine with Python 3.11: `make demo`, then `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: demo test bench samples clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[tf,test]"
	touch $@

demo: $(VENV)/.installed
	@echo "== ckptdoctor inspect sample_ckpts/seed-trainables (the seed's network, Saver over trainables only) =="
	-$(BIN)/ckptdoctor inspect sample_ckpts/seed-trainables/model.ckpt
	@echo
	@echo "== ckptdoctor inspect sample_ckpts/seed-no-update (UPDATE_OPS never run) =="
	-$(BIN)/ckptdoctor inspect sample_ckpts/seed-no-update/model.ckpt --stats=False

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

samples: $(VENV)/.installed
	$(PY) sample_ckpts/make_samples.py

clean:
	rm -rf $(VENV) .pytest_cache
