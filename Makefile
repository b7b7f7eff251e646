# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv in the repo and installs what it needs from the registries.
# torch==2.13.0 is installed first: that CPU wheel is on the machine, and a looser
# requirement would pull several GB of CUDA packages.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo toy-demo test lint format install bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The embedded-world loop with the benchmark's default method (GP, qUCB over a candidate pool;
# 7 rounds: round 0 + 6 guided rounds), then evaluate mode on its last round's surrogate.
# `python -m benchmarks.demo_figures --update-readme` then writes the README's demo figures.
demo: $(STAMP)
	$(PY) online/online_main_smc.py --config config/GP_smc.py:tiny_jpeg --config.run_name=demo --config.overwrite=True
	$(PY) online/online_main_smc.py --config config/GP_smc.py:tiny_evaluate --config.run_name=demo-evaluate \
		--config.overwrite=True --config.reward_model_path=runs/demo/round_0006

toy-demo: $(STAMP)
	$(PY) -m das.toy.demo --out runs/toy_demo

test: $(STAMP)
	$(PY) -m pytest -q

# Style and lint checks that CI runs before the tests (settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrites the code in the project's format.
format: $(STAMP)
	$(VENV)/bin/ruff format .

# Every benchmark in benchmarks/ in turn (`python -m benchmarks.run --help` lists them; bench_online, the
# longest: 47 minutes in its committed results); each rewrites its file in benchmarks/results/. One or some:
# `.venv/bin/python -m benchmarks.run bench_gp bench_world`.
bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info  # never runs/: it holds paid-for answers
