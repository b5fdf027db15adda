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
DEMO_TWIN := PGXTWIN_DATABASE_URL=sqlite:///$(DEMO_OUT)/twin.db $(VENV)/bin/pgxtwin twin

demo: $(STAMP)
	$(VENV)/bin/pgxtwin call examples/demo_patient.vcf --outside-calls examples/demo_outside_calls.tsv --format table
	mkdir -p $(DEMO_OUT)
	$(VENV)/bin/pgxtwin call examples/demo_patient.vcf --outside-calls examples/demo_outside_calls.tsv --format json -o $(DEMO_OUT)/call.json
	$(VENV)/bin/pgxtwin evaluate clopidogrel --dose "75 mg" --every 24h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin evaluate codeine --dose "30 mg" --every 6h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin evaluate simvastatin --dose "40 mg" --every 24h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin evaluate warfarin --dose "5 mg" --every 24h --genotype $(DEMO_OUT)/call.json --weight 72 --age 64
	$(VENV)/bin/pgxtwin simulate clopidogrel --dose "75 mg" --every 24h --days 14 --genotype $(DEMO_OUT)/call.json --n 500 --plot $(DEMO_OUT)/clopidogrel.png
	# the twin: genotype + covariates -> medications and a measured level -> verdicts -> report
	rm -f $(DEMO_OUT)/twin.db $(DEMO_OUT)/twin.db-wal $(DEMO_OUT)/twin.db-shm
	$(DEMO_TWIN) create --patient-id demo-001 --call $(DEMO_OUT)/call.json --sex F --age 64 --weight 72 --height 165 --creatinine 0.9
	$(DEMO_TWIN) medicate demo-001 --drug escitalopram --dose "10 mg" --every 24h --start 2026-11-20T08:00:00+00:00 --given 5
	$(DEMO_TWIN) observe demo-001 --drug escitalopram --concentration 31 --unit ng/mL --hours-after-first-dose 95.5
	$(DEMO_TWIN) evaluate demo-001
	$(DEMO_TWIN) history demo-001
	PGXTWIN_DATABASE_URL=sqlite:///$(DEMO_OUT)/twin.db $(VENV)/bin/pgxtwin report demo-001 -o $(DEMO_OUT)/report.html --plots $(DEMO_OUT)/plots
	# populations: a virtual cohort, an in-silico trial of dosing strategies, a twin-adjusted (PROCOVA) analysis
	$(VENV)/bin/pgxtwin population --n 20000 --mix european=0.6,east_asian=0.4 --seed 7 -o $(DEMO_OUT)/population.parquet
	$(VENV)/bin/pgxtwin trial run examples/trial_escitalopram.yaml -o $(DEMO_OUT)/trial --workers 2
	$(VENV)/bin/pgxtwin trial analyse examples/procova_trial.csv --drug clopidogrel --dose "75 mg" --every 24h --metric auc_tau --analyte clopidogrel-H4 --log

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_call.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
