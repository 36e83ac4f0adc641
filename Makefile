# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
STATE := .state

.PHONY: demo test lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime install (what an edge box gets), pinned by requirements.lock.
$(VENV)/.runtime: $(BIN)/python pyproject.toml requirements.lock
	$(PIP) install -c requirements.lock -e .
	touch $@

# Everything for tests and tools on top.
$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) install -c requirements.lock -e ".[dev]"
	touch $@

demo: $(VENV)/.runtime
	XDG_DATA_HOME=$(CURDIR)/$(STATE) $(BIN)/agent models list
	XDG_DATA_HOME=$(CURDIR)/$(STATE) $(BIN)/agent enroll examples/gallery -g $(STATE)/demo_gallery
	XDG_DATA_HOME=$(CURDIR)/$(STATE) $(BIN)/agent search examples/gallery/Oatly-Oat-Milk -g $(STATE)/demo_gallery -k 3
	@echo "--- agent run on examples/camera.mp4 (events on stdout, first 3 shown) ---"
	XDG_DATA_HOME=$(CURDIR)/$(STATE) $(BIN)/agent -c examples/demo.toml run -g $(STATE)/demo_gallery $(if $(BROKER),--broker $(BROKER) --print-events) > $(STATE)/demo_events.jsonl
	@head -n 3 $(STATE)/demo_events.jsonl
	$(BIN)/python tools/score_events.py $(STATE)/demo_events.jsonl examples/camera_gt.csv
	@echo "--- agent status: the last report of the run that just ended (exit 3: not running) ---"
	XDG_DATA_HOME=$(CURDIR)/$(STATE) $(BIN)/agent -c examples/demo.toml status || [ $$? -eq 3 ]

lint: $(VENV)/.dev
	$(BIN)/ruff check agent tests tools
	$(BIN)/ruff format --check agent tests tools

test: lint
	$(BIN)/python -m pytest -ra

lock:
	rm -rf /tmp/agent-lock-venv && $(PYTHON) -m venv /tmp/agent-lock-venv
	/tmp/agent-lock-venv/bin/pip install -q -e ".[dev]"
	/tmp/agent-lock-venv/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .ruff_cache
