# rtlib — one venv, real Redis, every check.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := constraints.txt

.PHONY: install lock test test-recording jstest lint schema bench bench-socketio serve clean

## Installs are pinned by constraints.txt: a new release on the registry changes nothing until `make lock`.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## make lock: refresh constraints.txt on purpose: resolve pyproject.toml afresh in a scratch venv, freeze it.
## Then `make clean test` (tests/test_lock.py checks the env matches) and commit constraints.txt with the result.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -e '.[dev]'
	{ sed -n '/^#/p' $(LOCK); .lock-venv/bin/pip freeze --exclude-editable | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv
	@echo "constraints.txt refreshed: now run 'make clean test' and commit it with what changed"

## make test: the whole suite against a real redis-server the fixtures start on a free port (the browser
## tests drive Debian's chromium), the hidden-tab recording included, node --test over the browser client, then
## nbval over the notebooks (CI-sized parameters; a cell may take 300 s: notebook 06 runs five servers in one
## cell). Three xdist workers on two cores: many tests wait on real time (browsers, live runs in compressed
## time), and tests/schedule.py hands out the longest files first. Plain `pytest` runs serially, without the
## recording (pyproject.toml's addopts).
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder -m "recording or not recording"
	$(MAKE) --no-print-directory jstest
	$(PY) -m pytest -q --durations=12 --nbval-lax --nbval-current-env --timeout 300 notebooks/

## make test-recording: only the real-browser hidden-tab test (~2.5 min: a throttling Chromium, timer vs probe;
## make test runs it too, beside the other tests).
test-recording: $(STAMP)
	$(PY) -m pytest -q -m recording tests/web/test_hidden_tab_browser.py

## make jstest: node's built-in test runner over rtlib/web: rtlib-client.js (ordering, backoff, protocol) and
## rtlib-query.js against the real @tanstack/query-core (versions pinned in tests/web/package-lock.json, installed
## into tests/web/node_modules by `npm ci` when the lock is newer than the last install; nothing else is fetched).
## Without node (or npm, for the adapter) that part is skipped with a message, except in CI (CI=true): a failure.
jstest:
	@if ! command -v node >/dev/null 2>&1; then \
	  if [ -n "$$CI" ]; then echo "make jstest: node is missing (apt-get install nodejs)"; exit 1; fi; \
	  echo "make jstest: SKIPPED: node is not installed (apt-get install nodejs)"; \
	elif ! command -v npm >/dev/null 2>&1; then \
	  if [ -n "$$CI" ]; then echo "make jstest: npm is missing (apt-get install npm)"; exit 1; fi; \
	  echo "make jstest: rtlib-query tests SKIPPED: npm is not installed (apt-get install npm)"; \
	  node --test tests/web/rtlib-client.test.mjs; \
	else \
	  if [ ! tests/web/node_modules/.npm-ci-stamp -nt tests/web/package-lock.json ]; then \
	    (cd tests/web && npm ci --no-audit --no-fund --loglevel=error) || exit 1; \
	    touch tests/web/node_modules/.npm-ci-stamp; fi; \
	  node --test tests/web/rtlib-client.test.mjs tests/web/rtlib-query.test.mjs; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check rtlib tests bench

## make schema: regenerate docs/events.schema.json and the presence table in docs/protocol.md §9 from the
## code (tests check both are current).
schema: $(STAMP)
	$(VENV)/bin/rtlib schema --out docs/events.schema.json
	$(PY) scripts/presence_table.py

## make bench: server cost and latency vs the toy forwarder; writes bench/results/.
bench: $(STAMP)
	$(PY) -m bench.cost.server_cost

## make bench-socketio: notebook 06's measurements at full size (rtlib vs Socket.IO on Node and Python, and two
## plain forwarders); installs the Node peers with npm into ~/.cache/rtlib/node-peers; writes bench/results/.
bench-socketio: $(STAMP)
	$(PY) -m bench.peers.compare

clean:
	rm -rf $(VENV) .lock-venv .pytest_cache build *.egg-info

.PHONY: demo lab nbtest websize

## make demo: execute every notebook at full size (hundreds to 1,000 clients; 10:40 from a fresh clone on 2026-12-08,
## install included: 01 60 s, 02 64, 03 78, 04 118, 05 107, 06 162, 07 2; a second run re-runs only what changed)
## into reports/*.html + reports/index.html, then check them in headless Chromium (if installed).
demo: $(STAMP)
	$(PY) scripts/make_reports.py
	@if command -v chromium >/dev/null 2>&1; then $(PY) scripts/check_reports.py; \
	else echo "(no chromium: the reports were not checked in a browser; apt-get install -y chromium)"; fi

## make lab: JupyterLab on notebooks/ (the notebooks run at their CI-sized defaults; see notebooks/README.md).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

## make nbtest: run the notebooks and compare the cells marked NBVAL_CHECK_OUTPUT with their saved outputs.
nbtest: $(STAMP)
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --timeout 300 notebooks/

## make websize: the browser client's size minified + gzipped vs socket.io-client's (npm packages in a cache dir).
websize: $(STAMP)
	$(PY) -m bench.peers.web_client_size
