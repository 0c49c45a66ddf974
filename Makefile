# Quick start: `make demo` runs the main job on the embedded local SMTP server; `make test` runs the tests.
# Both create .venv when needed and install pinned versions (constraints.txt). Needs Python 3.11 and Java 17.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "mailgem needs Python 3.11, found " + sys.version.split()[0]'
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

# Benchmarks (not part of the tests): needs Postfix's smtp-sink (Debian package postfix) for
# trustworthy throughput; falls back to an aiosmtpd sink and says so.
bench: $(STAMP)
	@command -v smtp-sink >/dev/null || echo "smtp-sink not found: apt-get install postfix (debconf: No configuration) for a fast sink"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) outbox data .pytest_cache
