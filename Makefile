# Set-up and everyday commands. `make demo` and `make test` create .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
FASTAST := $(VENV)/bin/fastast
# The torch trio must match exactly; the constraints file pins the tested set for this set-up.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

DEMO_DATA := data/demo
DEMO_RUNS := runs/demo
DEMO_RESULTS := results/demo

.PHONY: setup demo test lint bench clean clean-demo

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,export]'
	touch $@

setup: $(VENV)/.installed

# The end-to-end demo on the generated demo set, CPU-sized: prepare → CNN teacher → three tiny
# AST students (no merging; merging at r = DEMO_R; merging and distillation) → sweep r → the
# paper's Tables 1 and 2 in small and a two-line summary, computed from the sweep's CSV. Each
# step is skipped when its result exists (a run is complete once its summary.json exists).
DEMO_R := 8

demo: setup $(DEMO_RESULTS)/sweep.png
	$(FASTAST) report $(DEMO_RESULTS)/sweep.csv --baseline ast --tome tome --kd tome+kd \
		--r $(DEMO_R)

$(DEMO_DATA)/manifest.yaml: | setup
	$(FASTAST) prepare demo --out $(DEMO_DATA)

$(DEMO_RUNS)/teacher/summary.json: $(DEMO_DATA)/manifest.yaml
	$(FASTAST) train-teacher --recipe demo-teacher --data $(DEMO_DATA) \
		--out $(DEMO_RUNS)/teacher $(if $(wildcard $(DEMO_RUNS)/teacher/last.pt),--resume)

$(DEMO_RUNS)/ast/summary.json: $(DEMO_DATA)/manifest.yaml
	$(FASTAST) distill --recipe demo --teacher none --r 0 --data $(DEMO_DATA) \
		--out $(DEMO_RUNS)/ast $(if $(wildcard $(DEMO_RUNS)/ast/last.pt),--resume)

$(DEMO_RUNS)/tome/summary.json: $(DEMO_DATA)/manifest.yaml
	$(FASTAST) distill --recipe demo --teacher none --r $(DEMO_R) --data $(DEMO_DATA) \
		--out $(DEMO_RUNS)/tome $(if $(wildcard $(DEMO_RUNS)/tome/last.pt),--resume)

$(DEMO_RUNS)/tome-kd/summary.json: $(DEMO_RUNS)/teacher/summary.json
	$(FASTAST) distill --recipe demo-distill --r $(DEMO_R) --data $(DEMO_DATA) \
		--teacher-checkpoint $(DEMO_RUNS)/teacher/last.pt \
		--out $(DEMO_RUNS)/tome-kd $(if $(wildcard $(DEMO_RUNS)/tome-kd/last.pt),--resume)

# sweep.png is written last: an interrupted sweep (its CSV holds the finished rows) is resumed.
# The three students share one architecture and are timed in one interleaved loop: tome and
# tome+kd (merging as trained) share one measurement; ast (r = 0) is merged off the shelf with
# proportional attention on, a setting of its own. One backend (torch) for every r, so that the
# speedups measure merging alone (`--backend auto` may pick another backend at another r).
$(DEMO_RESULTS)/sweep.png: $(DEMO_RUNS)/ast/summary.json $(DEMO_RUNS)/tome/summary.json \
		$(DEMO_RUNS)/tome-kd/summary.json
	$(FASTAST) sweep --data $(DEMO_DATA) --r 0:24:4 --batch-size 32 --runs 10 --backend torch \
		--checkpoint ast=$(DEMO_RUNS)/ast/best.pt \
		--checkpoint tome=$(DEMO_RUNS)/tome/best.pt \
		--checkpoint tome+kd=$(DEMO_RUNS)/tome-kd/best.pt \
		--out $(DEMO_RESULTS)/sweep.csv

# One test process per core, at most 4 (pytest-xdist; each holds its own models and demo set,
# so memory grows with their number: `make test TEST_WORKERS=8` for more), each on one thread:
# the tests' models are tiny, and more threads per process only contend for the same cores. A
# module's tests share one process (--dist loadscope), so its module fixtures (ONNX exports,
# trained models) run once.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))

test: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadscope

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_training.py

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_RUNS) $(DEMO_RESULTS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
