# Two commands for a newcomer: `make run` (serve on http://127.0.0.1:8000) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# litellm must not fetch price maps or tokenizers from the internet (STACK-NOTES.md).
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install migrate worker beat bench clean admin-password

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found); set PYTHON=..."; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(PY) -c "import django, rest_framework, litellm" >/dev/null
	touch $(STAMP)

install: $(STAMP)

# The embedded first-run setup: SQLite under var/, Celery eager, dev keys generated into var/.
run: export DEBUG ?= true
run: export LLMCONN_EGRESS_ALLOW ?= 127.0.0.0/8,::1
run: $(STAMP)
	@$(PY) manage.py migrate --noinput -v 0
	@$(PY) manage.py serve --host $(HOST) --port $(PORT)

# A new password for the admin user (Django's changepassword asks for it twice).
admin-password: export DEBUG ?= true
admin-password: $(STAMP)
	@$(PY) manage.py changepassword admin

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

worker: $(STAMP)
	$(VENV)/bin/celery -A llmconn worker --loglevel=INFO

# Benchmarks (bench/run.py): llmconn vs LiteLLM's proxy and the health sweep, key rotation and
# listing targets; needs PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL). Appends to
# bench/RESULTS.md. `make bench BENCH_ARGS="gateway --quick"` for a short run of one benchmark.
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

beat: $(STAMP)
	$(VENV)/bin/celery -A llmconn beat --loglevel=INFO

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
