# Quick start: `make demo` runs the main job on the embedded local SMTP server; `make test` runs the tests.
# Both create .venv when needed and install pinned versions (constraints.txt). Needs Python 3.11+ and Java 17.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean test-pythons dist screenshots test-browser test-airflow constraints-airflow \
	test-airflow2 test-dagster test-integrations integration-envs

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "mailgem needs Python 3.11 or newer, found " + sys.version.split()[0]'
	@command -v java >/dev/null || { echo "Java 17 is needed by PySpark: install openjdk-17-jre-headless"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

data/flights.parquet: $(STAMP) examples/prepare_flights.py
	$(BIN)/python examples/prepare_flights.py $@

demo: $(STAMP) data/flights.parquet
	$(BIN)/mailgem run examples/flights_delay_report.yaml --local

test: $(STAMP)
	$(BIN)/python -m pytest

# The README's images, docs/img/report-desktop.png and report-phone.png: the demo's email as
# received by the embedded server, rendered by headless Chromium (Debian's chromium-headless-shell,
# or $$MAILGEM_CHROMIUM) at 1000 and 390 px; ui-fabric.png and ui-job.png: `mailgem ui`'s pages,
# as tests/test_ui_browser.py drives them.
screenshots: $(STAMP) $(BROWSER_STAMP) data/flights.parquet
	$(BROWSER_VENV)/bin/python examples/screenshot.py --out docs/img --mailgem $(BIN)/mailgem
	$(BROWSER_VENV)/bin/python -m pytest -q tests/test_ui_browser.py
	cp test-artifacts/ui/fabric.png docs/img/ui-fabric.png
	cp test-artifacts/ui/job.png docs/img/ui-job.png

# The browser tests, in an environment of their own (design.md: heavy frameworks apart from
# `make test`): mailgem (with its ui and spark extras) and Playwright, driving Debian's
# chromium-headless-shell: the report's HTML part, and `mailgem ui` end to end. .ci/run runs
# them after `make test`; there, without Playwright, they are skipped and say so.
BROWSER_VENV := .venv-browser
BROWSER_STAMP := $(BROWSER_VENV)/.installed

$(BROWSER_STAMP): pyproject.toml constraints.txt
	test -x $(BROWSER_VENV)/bin/python || $(PYTHON) -m venv $(BROWSER_VENV)
	$(BROWSER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BROWSER_VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[browser]'
	touch $(BROWSER_STAMP)

test-browser: $(BROWSER_STAMP) data/flights.parquet
	$(BROWSER_VENV)/bin/python -m pytest tests/test_report_render.py tests/test_ui_browser.py

# The Airflow tests, in an environment of their own (design.md): Airflow pins its own dependency
# set, so .venv-airflow holds Airflow 3 and mailgem (spark extra) at the versions of
# constraints-airflow.txt: the README's example DAG run with dag.test() against a real SMTP
# server, the operator's exit mapping and the airflow secret store. .ci/run runs them after
# `make test`. `make constraints-airflow` resolves the set again from PyPI and rewrites the file.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
AIRFLOW_VERSION ?= 3.3.*

$(AIRFLOW_STAMP): pyproject.toml constraints-airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -c constraints-airflow.txt -e '.[airflow-test]'
	touch $(AIRFLOW_STAMP)

test-airflow: $(AIRFLOW_STAMP)
	$(AIRFLOW_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_airflow.py

constraints-airflow:
	rm -rf .venv-airflow-resolve && $(PYTHON) -m venv .venv-airflow-resolve
	.venv-airflow-resolve/bin/python -m pip install --quiet --upgrade pip
	.venv-airflow-resolve/bin/python -m pip install --quiet -e '.[airflow-test]' 'apache-airflow==$(AIRFLOW_VERSION)'
	{ sed -n '1,3p' constraints-airflow.txt; .venv-airflow-resolve/bin/python -m pip freeze --exclude mailgem --exclude pip; } \
	  > constraints-airflow.txt.new && mv constraints-airflow.txt.new constraints-airflow.txt
	rm -rf .venv-airflow-resolve

# The oldest supported Airflow (the airflow extra admits 2.10+): the same tests on Airflow 2.10.5, in
# .venv-airflow2 at the versions of constraints-airflow2.txt (one resolution from PyPI, frozen, as
# above). Not run by .ci/run (CI time is tight): run it when the operator, the airflow secret store
# or the example DAG change.
AIRFLOW2_VENV := .venv-airflow2
AIRFLOW2_STAMP := $(AIRFLOW2_VENV)/.installed

$(AIRFLOW2_STAMP): pyproject.toml constraints-airflow2.txt
	test -x $(AIRFLOW2_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW2_VENV)
	$(AIRFLOW2_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW2_VENV)/bin/python -m pip install --quiet -c constraints-airflow2.txt -e '.[airflow-test]'
	touch $(AIRFLOW2_STAMP)

test-airflow2: $(AIRFLOW2_STAMP)
	$(AIRFLOW2_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_airflow.py

# The Dagster integration's tests (mailgem.dagster, tests/dagster_integration/), in an
# environment of their own (design.md: heavy frameworks apart from `make test`): mailgem with its
# dagster extra, pandas frames only (no PySpark, no Java), pinned by constraints-dagster.txt.
# .ci/run runs them after `make test`; there, without Dagster, they are skipped and say so.
DAGSTER_VENV := .venv-dagster
DAGSTER_STAMP := $(DAGSTER_VENV)/.installed

$(DAGSTER_STAMP): pyproject.toml constraints-dagster.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "mailgem needs Python 3.11 or newer, found " + sys.version.split()[0]'
	test -x $(DAGSTER_VENV)/bin/python || $(PYTHON) -m venv $(DAGSTER_VENV)
	$(DAGSTER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DAGSTER_VENV)/bin/python -m pip install --quiet -c constraints-dagster.txt -e '.[dagster]' pytest pytest-timeout
	touch $(DAGSTER_STAMP)

test-dagster: $(DAGSTER_STAMP)
	$(DAGSTER_VENV)/bin/python -m pytest tests/dagster_integration

# Both scheduler integrations (.ci/run runs this after `make test`); `make integration-envs`
# only creates their environments (.ci/run does that while `make test` runs).
test-integrations: test-airflow test-dagster

integration-envs: $(AIRFLOW_STAMP) $(DAGSTER_STAMP)

# Benchmarks (not part of the tests): needs Postfix's smtp-sink (Debian package postfix) for
# trustworthy throughput; falls back to an aiosmtpd sink and says so.
bench: $(STAMP)
	@command -v smtp-sink >/dev/null || echo "smtp-sink not found: apt-get install postfix (debconf: No configuration) for a fast sink"
	$(BIN)/python benchmarks/run.py

# The test suite on every supported Python (found with pyenv, else on PATH), each in its own
# .venv-3.X; CI runs 3.11 (make test). Prints one result line per version at the end.
PYTHONS ?= 3.11 3.12 3.13
test-pythons:
	@for v in $(PYTHONS); do \
	  py=$$(pyenv prefix $$v 2>/dev/null)/bin/python$$v; test -x "$$py" || py=$$(command -v python$$v); \
	  if [ -z "$$py" ] || [ ! -x "$$py" ]; then echo "python$$v: not found" >> .pythons.log; continue; fi; \
	  test -x .venv-$$v/bin/python || $$py -m venv .venv-$$v; \
	  .venv-$$v/bin/python -m pip install --quiet --upgrade pip && \
	  .venv-$$v/bin/python -m pip install --quiet -c constraints.txt -e '.[test]' && \
	  .venv-$$v/bin/python -m pytest -q -p no:cacheprovider > .venv-$$v/pytest.log 2>&1; \
	  echo "python$$v: $$(tail -1 .venv-$$v/pytest.log)" >> .pythons.log; \
	done; cat .pythons.log; rm -f .pythons.log

# A wheel and an sdist in dist/, checked with twine (what a package index would show).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

clean:
	rm -rf $(VENV) $(BROWSER_VENV) $(AIRFLOW_VENV) $(AIRFLOW2_VENV) $(DAGSTER_VENV) .venv-3.* outbox data dist .pytest_cache test-artifacts
