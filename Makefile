# Quick start: `make demo` then `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0: the CPU wheel on disk (pip's find-links / cache); pinned in pyproject
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

DEMO_OUT := pgxtwin-data/demo

demo: $(STAMP)
	$(VENV)/bin/pgxtwin call examples/demo_patient.vcf --outside-calls examples/demo_outside_calls.tsv --format table
	mkdir -p $(DEMO_OUT)
	$(VENV)/bin/pgxtwin call examples/demo_patient.vcf --outside-calls examples/demo_outside_calls.tsv --format json -o $(DEMO_OUT)/call.json
	$(VENV)/bin/pgxtwin evaluate clopidogrel --dose "75 mg" --every 24h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin evaluate codeine --dose "30 mg" --every 6h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin evaluate simvastatin --dose "40 mg" --every 24h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin evaluate warfarin --dose "5 mg" --every 24h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin simulate clopidogrel --dose "75 mg" --every 24h --days 14 --genotype $(DEMO_OUT)/call.json --n 500 --plot $(DEMO_OUT)/clopidogrel.png

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_call.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
