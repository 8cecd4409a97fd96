# The two set-up commands of SPEC §2: `make run` and `make test`.
PY       ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
DEBS     := kea-dhcp4-server kea-ctrl-agent kea-admin kea-common isc-dhcp-client udhcpc \
            dhcpcd-base libpcap0.8 iproute2 redis-server
export LEASEFLOW_TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export LEASEFLOW_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test install deps debs node services unit integration lint lock bench clean

run: install
	$(BIN)/leaseflow db upgrade
	$(BIN)/leaseflow seed
	$(BIN)/leaseflow up

install: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

node: node_modules/.stamp

node_modules/.stamp: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Real peers for the integration suite, installed only where missing so repeated runs stay fast.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

deps: install node debs

services:
	@tools/ensure-services.sh

test: deps services
	$(BIN)/python -m pytest -q tests

unit: install
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check app workers tests bench
	$(BIN)/lint-imports

bench: deps services
	$(BIN)/leaseflow bench pipeline

lock:
	rm -rf /tmp/leaseflow-lock && $(PY) -m venv /tmp/leaseflow-lock
	/tmp/leaseflow-lock/bin/pip install -q -e '.[test]'
	/tmp/leaseflow-lock/bin/pip freeze --exclude-editable | sed '1i # Exact pins for every dependency' > constraints.txt

clean:
	rm -rf $(VENV) node_modules instance .pytest_cache
