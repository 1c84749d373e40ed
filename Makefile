# `make run` and `make test` each do their own set-up in .venv (see the README's quickstart).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

ARTIFACT := artifacts/sainet
DEFAULT_RUN := runs/default

.PHONY: test run model install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first (a local wheel on our machines); the `train` extra's range accepts it.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,cpu,dev]'
	touch $(STAMP)

install: $(STAMP)

# Two workers, one test file each at a time (a file's fixtures stay in one process): about 4.5 minutes
# on 2 idle cores (the servers a test starts wait on each other, so one process leaves a core idle).
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile

# The default model: synthetic data, trained and exported once.
$(ARTIFACT): | $(STAMP)
	# the converging defaults (early stopping on validation AUC); a 6-epoch cap stopped it still improving
	$(BIN)/sainet train --out $(DEFAULT_RUN) --threads 2
	$(BIN)/sainet export --run $(DEFAULT_RUN) --out artifacts

model: $(ARTIFACT)

run: $(STAMP) $(ARTIFACT)
	./scripts/run.sh

clean:
	rm -rf $(VENV) .pytest_cache
