# hetcrf-lite: every target creates .venv when it is missing.
#   make demo   train HetCRF on the built-in synthetic graph and print its metrics
#   make test   run every unit test and every notebook (nbval)
#   make fuzz   the property-based suite with many more examples; writes figures/fuzz_outcomes.*
#   make course the executed notebooks as static HTML that opens offline (build/course/)
#   make solutions  rerun the benchmark exercises' solutions (ACM, a few minutes) in place, outputs kept
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build by default; GPU users: make test TORCH_SPEC="torch==2.11.0" (or any spec pip takes).
TORCH_SPEC ?= torch==2.13.0
# Benchmarks live beside the checkout in ../shared; use them unless HETCRF_DATA is already set.
SHARED_DATA := $(abspath ../shared/datasets/heco)
ifeq ($(origin HETCRF_DATA), undefined)
ifneq ($(wildcard $(SHARED_DATA)),)
export HETCRF_DATA := $(SHARED_DATA)
endif
endif
NBVAL_TIMEOUT ?= 600

.PHONY: venv demo test unit notebooks lab figures bench reproduce ablations fuzz course solutions clean

# Every other package at the exact version of constraints.txt (tested; torch is not in it).
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch only when none is importable, so a GPU build chosen by the user is kept
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/hetcrf-lite train --dataset synthetic --out runs/demo --threads 1

unit: venv
	$(BIN)/python -m pytest tests -q -rs

# Notebooks write their figures to a temporary folder here, so a test run leaves the tree clean,
# and train rather than load a matching run folder (HETCRF_REUSE_RUNS=0; notebooks 07 and 08).
# The course notebooks and notebooks/solutions/synthetic_exercises.ipynb; not the benchmark
# solutions (minutes of ACM training, stored with outputs: `make solutions` reruns them).
SOLUTIONS_BENCH := notebooks/solutions/benchmarks
notebooks: venv
	tmp=$$(mktemp -d) && HETCRF_FIGURES=$$tmp HETCRF_REUSE_RUNS=0 $(BIN)/python -m pytest --nbval-lax \
	  --nbval-cell-timeout=$(NBVAL_TIMEOUT) -p no:cacheprovider --ignore=$(SOLUTIONS_BENCH) notebooks -q; \
	  status=$$?; rm -rf $$tmp; exit $$status

# The two suites run side by side, one per core: every test process and notebook kernel runs one
# torch thread (tests/conftest.py, each notebook's first cell), so they do not oversubscribe the
# cores. --output-sync prints each suite's output whole when it ends. Serially they took 20 min 43 s
# in session 14 (unit 7:17, notebooks 11:12, fresh clone, 2-core machine); side by side, README.md.
test: venv
	$(MAKE) --no-print-directory -j2 --output-sync=target unit notebooks

lab: venv
	$(BIN)/jupyter lab notebooks/

# Regenerate the committed figures (notebooks executed in place, outputs kept).
figures: venv
	for nb in notebooks/*.ipynb; do \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=$(NBVAL_TIMEOUT) "$$nb" || exit 1; done

# The solutions that train a benchmark (needs HETCRF_DATA or the loader's download), executed in
# place so that the committed outputs are those of the last run.
solutions: venv
	tmp=$$(mktemp -d) && for nb in $(SOLUTIONS_BENCH)/*.ipynb; do \
	  HETCRF_FIGURES=$$tmp $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 "$$nb" || { rm -rf $$tmp; exit 1; }; done; rm -rf $$tmp

bench: venv
	$(BIN)/python benchmarks/load_speed.py
	$(BIN)/python benchmarks/encoder_speed.py
	$(BIN)/python benchmarks/epoch_speed.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/scaling.py

reproduce: venv
	$(BIN)/python benchmarks/reproduce.py --jobs 2

# Channels, augmentation, second-stage depth 0/1 and the design switches at the shipped epochs
# (acm, freebase: 3 seeds; aminer channels: 1), the other tables at reduced epochs; about 14
# core-hours (--plan). Resumable: finished runs are appended to docs/ablations_runs.jsonl
# (committed), so a rerun, here or in a fresh clone, trains only what is missing.
ablations: venv
	$(BIN)/python benchmarks/ablations.py --jobs 2

# tests/test_fuzz.py with its long profile (2,000 examples per target instead of 60); the
# outcome counts and their bar chart go to figures/ (docs/reliability.md shows them).
fuzz: venv
	HETCRF_FUZZ_PROFILE=long HETCRF_FUZZ_FIGURES=figures $(BIN)/python -m pytest \
	  tests/test_fuzz.py -q -p no:cacheprovider

# Static HTML of notebooks/*.ipynb with their saved outputs; MathJax and the widget manager are
# packed from the npm registry (pinned, sha512-checked) into build/course/_static, no CDN.
course: venv
	$(BIN)/python benchmarks/course.py --out build/course

clean:
	rm -rf $(VENV) runs .pytest_cache
