# event-hooks: Kong's Event Hooks as AWS Lambda functions in Rust.
# `make run` starts the whole service locally; `make test` runs every test. `make help` lists all.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8001
DATA_DIR ?= ./data
ARCH ?= x86_64

.PHONY: help run test unit-and-integration console-test conformance lint fmt validate-template build zips deploy deploy-tools build-check bench reliability reliability-quick venv clean simulated-stack invoke memory-bench chaos

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

run: ## Start the service locally on 127.0.0.1:8001 with data in ./data (no AWS needed)
	$(CARGO) run --release -p event-hooks-local --bin event-hooks -- serve --listen $(LISTEN) --data-dir $(DATA_DIR)

test: lint validate-template build-check unit-and-integration console-test conformance reliability-quick simulated-stack ## Run every check and test (installs moto, the SAM CLI and schemathesis into .venv)

unit-and-integration: venv ## Unit, contract (SQLite and moto) and HTTP tests, with a summary line
	scripts/test.sh

console-test: venv ## The web console in headless Chromium (Playwright): the local server, then the admin function on moto
	$(CARGO) build -p event-hooks-local -p admin-api -p probe
	.venv/bin/python scripts/console_test.py --mode local
	scripts/with-moto.sh $(CARGO) test -p event-hooks-tests console_lambda -- --ignored

conformance: venv ## schemathesis (default checks, 3 fixed seeds, stateful links) against the local server and /openapi.json
	scripts/schemathesis.sh

lint: ## Formatting and clippy, warnings as errors; ruff (ruff.toml) on the Python of scripts/ and tests/simstack/
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/venv.sh
	.venv/bin/ruff check scripts tests/simstack

fmt: ## Format the code
	$(CARGO) fmt --all

validate-template: venv ## sam validate --lint, the AWS-only template checks, checkov and parliament on template.yaml
	scripts/validate-template.sh

venv: ## The test tools: .venv (moto, schemathesis, checkov, parliament, the deploy tools) and, if missing, curl, chromium, unshare, ip
	scripts/system-deps.sh
	scripts/venv.sh

deploy-tools: ## Only the deploy toolchain in .venv (SAM CLI, cargo-lambda, zig): no sudo, no system packages
	scripts/venv.sh deploy

build: deploy-tools ## sam build (rust-cargolambda, tools from .venv) of the three functions; ARCH=x86_64|arm64
	ARCH=$(ARCH) scripts/sam-build.sh

zips: deploy-tools ## The release zips with cargo-lambda (zig from PyPI), their sizes and the 10 MB check
	scripts/build-lambdas.sh

build-check: venv ## The inputs of sam build agree with the workspace and the code; the deploy path installs nothing else (SAM_BUILD=1: a full make build too)
	.venv/bin/python scripts/check-build-inputs.py
	.venv/bin/python scripts/check-deploy-path.py
	if [ "$(SAM_BUILD)" = 1 ]; then $(MAKE) build; fi

deploy: deploy-tools ## make build, then sam deploy --guided with the same ARCH (needs AWS credentials)
	ARCH=$(ARCH) scripts/deploy.sh

simulated-stack: venv zips ## template.yaml's stack in moto, the functions under the SAM CLI's emulator: Kong's flows end to end
	scripts/simulated-stack.sh

FN ?= AdminFunction
EVENT ?= events/admin-list-hooks.json
invoke: venv zips ## `sam local invoke` without Docker, on a local moto: make invoke FN=DispatchFunction EVENT=events/dispatch-events-batch.json
	cd tests/simstack && ../../.venv/bin/python invoke.py $(FN) $(abspath $(EVENT))

bench: ## Benchmarks: per-delivery overhead, end-to-end throughput, start-up time and idle memory
	$(CARGO) bench -p event-hooks --bench overhead
	$(CARGO) bench -p event-hooks-local --bench throughput
	scripts/startup-bench.sh

memory-bench: venv zips ## The dispatch function at 256/512/1,024 MB (CPU share as on Lambda, by cgroup quota; needs root): latency, CPU, cost
	.venv/bin/python tests/simstack/membench.py $(ARGS)

chaos: venv zips ## The serverless path under AWS and Lambda faults (issue 20): 3 seeds x 1,500 events, table (ARGS to chaos.py)
	scripts/simulated-stack.sh -k nothing_is_lost
	cd tests/simstack && ../../.venv/bin/python chaos.py --seeds 1,2,3 --events 1500 $(ARGS)

reliability: venv ## Proof suite against the release build: attacks, kill -9, fuzz, SSRF, memory, bench (ARGS=--quick)
	$(CARGO) build --release -p event-hooks-local
	.venv/bin/python scripts/reliability/run.py $(ARGS)

reliability-quick: ## The proof suite's quick mode (every part small, no bench; part of make test)
	$(MAKE) reliability ARGS=--quick

clean: ## Remove build output, local data and the venv
	$(CARGO) clean
	rm -rf .venv data
