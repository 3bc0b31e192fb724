# Webhook intake for AWS Lambda. A fresh machine needs Rust, Python 3 and Node: every other tool is
# installed by these targets (Python tools into ./.venv).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

FUNCTIONS := $(notdir $(wildcard functions/*))
ARCH      ?= arm64
PROVIDER  ?= trybe
# The provider's first sample by name (events/<provider>/, without the rendered .apigw.json).
EVENT     ?= $(firstword $(sort $(basename $(notdir $(filter-out %.apigw.json,$(wildcard events/$(PROVIDER)/*))))))
WATCH_PORT ?= 9000
URL       ?= http://127.0.0.1:$(WATCH_PORT)/lambda-url/$(PROVIDER)-webhook
COUNT     ?= 1
CONCURRENCY ?= 1
SIM_SECONDS ?= 600
SIM_CI_SEEDS ?= 3000
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 20

.PHONY: sim sim-ci help venv test unit validate lint fmt fmt-check dev send invoke events build sizes bench load clean-dev fuzz fuzz-ci soak bench-cold bench-e2e

help: ## This list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(STAMP) ## Project virtualenv: moto[server] and cargo-lambda from PyPI

test: $(STAMP) fmt-check lint validate cdk-check ## fmt + clippy + template lint + unit and integration tests (integration tests start moto themselves) + the delivery simulation's budget of seeds + every memory scenario under its function's MemorySize
	cargo test --workspace --all-targets
	@$(MAKE) --no-print-directory sim-ci
	@$(MAKE) --no-print-directory memory-check

sim: ## Delivery simulation for SIM_SECONDS (default 600), or SEEDS=n seeds from FROM=1; reports seeds, deliveries, simulated days, violations
	cargo run --quiet --profile sim -p delivery-sim -- $(if $(SEEDS),--seeds $(SEEDS) --from $(or $(FROM),1),--seconds $(SIM_SECONDS))

sim-ci: ## The delivery simulation's fixed budget in `make test`: seeds 1..SIM_CI_SEEDS (3000, about a minute)
	cargo run --quiet --profile sim -p delivery-sim -- --seeds $(SIM_CI_SEEDS) --from 1

unit: ## Unit tests only (no moto)
	cargo test --workspace --lib --bins

validate: $(STAMP) ## Lint the SAM template offline (cfn-lint, and sam validate --lint with infra/samconfig.toml); the build checks' self-test
	cfn-lint infra/template.yaml
	cd infra && sam validate --lint
	$(PY) infra/check_build.py self-test

lint: ## clippy, warnings are errors; no aws-lc in the tree (TLS is rustls on ring, see shared::runtime::http_client)
	cargo clippy --workspace --all-targets -- -D warnings
	@if cargo tree --workspace -e normal,build -i aws-lc-sys >/dev/null 2>&1; then \
	  echo "aws-lc-sys is in the dependency tree again (cargo tree -i aws-lc-sys): a crate's TLS default features; use ring"; exit 1; fi

fmt: ## Format the code
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

dev: $(STAMP) ## Local pipeline: moto, cargo lambda watch (every function), SQS poller -> event-processor
	tools/dev.sh

send: ## Fire a signed sample at a running function: make send PROVIDER=trybe [EVENT=basket.submitted, default the provider's first sample] [URL=…] [COUNT=…] [CONCURRENCY=…]
	cargo run --quiet -p webhook-sim -- send $(PROVIDER) $(EVENT) --url $(URL) --count $(COUNT) --concurrency $(CONCURRENCY)

invoke: $(STAMP) ## Invoke a function under `make dev` with a freshly signed API Gateway event: make invoke PROVIDER=… EVENT=…
	@mkdir -p .dev/invoke
	cargo run --quiet -p webhook-sim -- render --events-out .dev/invoke
	cargo lambda invoke $(PROVIDER)-webhook --invoke-address 127.0.0.1 --invoke-port $(WATCH_PORT) --data-file .dev/invoke/$(PROVIDER)/$(EVENT).apigw.json

events: ## Re-render events/*/*.apigw.json from the raw samples (signed with local.env)
	cargo run --quiet -p webhook-sim -- render

# Without -p: the workspace's default members (the functions), as `sam build` and `cdk synth` select
# them, so that the three share one build in target/ (same packages, same features, same flags).
build: $(STAMP) ## Release builds of the functions for Lambda (ARCH=arm64 by default, or x86_64), in target/lambda/
	cargo lambda build --release $(if $(filter arm64,$(ARCH)),--arm64,--x86-64)
	@$(MAKE) --no-print-directory sizes

sizes: ## Sizes of the built Lambda binaries
	@for f in $(FUNCTIONS); do ls -l $(or $(CARGO_TARGET_DIR),target)/lambda/$$f/bootstrap 2>/dev/null | awk -v f=$$f '{printf "  %-20s %6.2f MB\n", f, $$5/1048576}'; done

bench: ## Criterion benchmarks of the receiver pipeline (CPU per accepted event)
	cargo bench -p shared --bench pipeline

load: ## Load run against a running function: make load PROVIDER=trybe EVENT=basket.submitted COUNT=2000 CONCURRENCY=16
	cargo run --release --quiet -p webhook-sim -- send $(PROVIDER) $(EVENT) --url $(URL) --count $(COUNT) --concurrency $(CONCURRENCY) --quiet

soak: $(STAMP) ## Long soak under random faults, reconciled (SOAK_EVENTS=20000, SOAK_FAULT_RATE=0.03)
	cargo test -p shared --test integration -- --ignored --exact --nocapture soak::soak

clean-dev: ## Remove local dev state (.dev)
	rm -rf .dev

fuzz: ## Every cargo-fuzz target for FUZZ_SECONDS each (default 60; nightly; installs cargo-fuzz)
	fuzz/run.sh $(FUZZ_SECONDS)

fuzz-ci: ## Short fuzz pass (FUZZ_CI_SECONDS=20 each); without nightly prints FUZZ SKIPPED and passes
	fuzz/run.sh --ci $(FUZZ_CI_SECONDS)

# CDK app (infra/cdk): npm ci from the lockfile when node_modules is missing or the lockfile changed,
# an offline synth (-c bundling=false: nothing built, no cargo, no Docker, no AWS account) and its
# comparison with the SAM template.
.PHONY: cdk-synth cdk-check
CDK_DIR   := infra/cdk
CDK_STAMP := $(CDK_DIR)/node_modules/.installed
CDK_ENV   := CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=1

$(CDK_STAMP): $(CDK_DIR)/package-lock.json $(CDK_DIR)/package.json
	cd $(CDK_DIR) && npm ci --no-audit --no-fund
	touch $@

cdk-synth: $(CDK_STAMP) ## Synthesize the CDK app offline, without building, into infra/cdk/cdk.out
	rm -rf $(CDK_DIR)/cdk.out
	cd $(CDK_DIR) && $(CDK_ENV) npx --no-install cdk synth --no-notices --quiet -c bundling=false

cdk-check: $(STAMP) cdk-synth ## The CDK stack equals the SAM stack (infra/compare_stacks.py); cfn-lint the CDK template
	$(PY) infra/compare_stacks.py --self-test
	cfn-lint --ignore-checks W3005 -- $(CDK_DIR)/cdk.out/WebhookIntake.template.json

# SAM (infra/samconfig.toml answers every prompt). The SAM CLI builds in the source tree, in
# target/ (it reads target/lambda/<binary>/bootstrap, so CARGO_TARGET_DIR must stay unset).
export SAM_CLI_TELEMETRY := 0
.PHONY: sam-build deploy-check
sam-build: $(STAMP) ## sam build in infra/ for ARCH (arm64), every bootstrap checked, the built template pinned to ARCH (docs/deploy.md)
	cd infra && sam build --parameter-overrides Architecture=$(ARCH)
	$(PY) infra/check_build.py sam --expect $(ARCH) --pin

deploy-check: $(STAMP) $(CDK_STAMP) ## The deploy path as docs/deploy.md types it, without an account: sam validate --lint, make sam-build (arm64), cdk synth with bundling, the same binaries
	cd infra && sam validate --lint
	@$(MAKE) --no-print-directory sam-build ARCH=arm64
	rm -rf $(CDK_DIR)/cdk.out
	cd $(CDK_DIR) && $(CDK_ENV) npx --no-install cdk synth --no-notices --quiet -c architecture=arm64 >/dev/null
	$(PY) infra/check_build.py compare

# Issue 13's measurement harnesses (tools/webhook-bench, BENCHMARKS.md). Not part of `make test`.
# Release function binaries, spawned as Lambda spawns them under an emulated Runtime API, against a
# moto the harness starts; CPU-limited scenarios need root (a cgroup; Lambda's share at 128 MB ≈
# 7.2 % of a core, 256 MB ≈ 14.5 %). The Python peer of bench-e2e lives in ./.venv-bench.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_RUNS  ?= 10
BENCH_WARM  ?= 200
E2E_RUNS    ?= 5
WEBHOOK_BENCH := cargo run --quiet -p webhook-bench --

$(BENCH_STAMP): bench/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt
	touch $@

bench-cold: $(STAMP) ## Cold starts under an emulated Lambda Runtime API: init, first/warm invocations, CPU, peak RSS, sizes
	cargo build --release $(addprefix -p ,$(FUNCTIONS))
	cargo build --quiet -p webhook-bench
	$(WEBHOOK_BENCH) sizes
	$(WEBHOOK_BENCH) cold --runs $(BENCH_RUNS) --warm $(BENCH_WARM) $(addprefix --function ,$(filter %-webhook,$(FUNCTIONS)))
	$(WEBHOOK_BENCH) cold --runs $(BENCH_RUNS) --warm $(BENCH_WARM) --tls
	$(WEBHOOK_BENCH) cold --runs 5 --warm 50 --tls --tls-ca-only
	$(WEBHOOK_BENCH) cold --runs 5 --warm 50 --direct
	$(WEBHOOK_BENCH) cold --runs 5 --warm 10 --function tilby-webhook --event tilby/customers.import-80
	$(WEBHOOK_BENCH) cold --runs 5 --warm 200 --archive
	$(WEBHOOK_BENCH) cold --runs $(BENCH_RUNS) --warm 50 --tls --memory 256 --cpu-percent 14.5
	$(WEBHOOK_BENCH) cold --runs $(BENCH_RUNS) --warm 50 --tls --memory 128 --cpu-percent 7.2

bench-e2e: $(STAMP) $(BENCH_STAMP) ## Our Trybe receiver beside a Python peer (Powertools idempotency + boto3), same events, same moto; then claim + send against an outbox
	cargo build --release -p trybe-webhook
	cargo build --quiet -p webhook-bench
	$(WEBHOOK_BENCH) e2e --runs $(E2E_RUNS) --warm $(BENCH_WARM)
	$(WEBHOOK_BENCH) e2e --runs $(E2E_RUNS) --warm $(BENCH_WARM) --tls
	$(WEBHOOK_BENCH) e2e --runs $(E2E_RUNS) --warm 50 --tls --memory 128 --cpu-percent 7.2
	cargo build --quiet --profile bench -p webhook-bench
	target/release/webhook-bench outbox --events 1000 --rounds 3

# Peak memory per scenario (tools/webhook-bench memory): the release functions on 10 MiB bodies and
# SQS batches, each scenario in a fresh process under the emulated Runtime API against moto, then
# again in a memory cgroup of each function's MemorySize in infra/template.yaml (root, cgroup v1 or
# v2). `make test` runs memory-check: it fails on an OOM kill, a crash, no answer, a 5xx or another
# answer than expected, never on a target (a run's peak varies by a few MiB: bench-memory reports
# the targets, the worst of MEMORY_RUNS runs, and the forged requests at the 256 MB CPU share).
.PHONY: bench-memory memory-check
MEMORY_RUNS ?= 1
BENCH_MEMORY_RUNS ?= 3

bench-memory: $(STAMP) ## Peak memory per scenario (worst of 3 runs) without a limit and under each function's MemorySize; the forged requests at the 256 MB CPU share (BENCHMARKS.md)
	cargo build --release $(addprefix -p ,$(FUNCTIONS))
	cargo build --quiet -p webhook-bench
	$(WEBHOOK_BENCH) memory --runs $(BENCH_MEMORY_RUNS)
	$(WEBHOOK_BENCH) memory --runs $(BENCH_MEMORY_RUNS) --limit-from-template --check
	$(WEBHOOK_BENCH) memory --limit-from-template --cpu-percent 14.5 --check --scenario trybe/forged --scenario tribe/forged --scenario standard/forged --scenario trybe/json-small
	$(WEBHOOK_BENCH) memory --limit-mb 128 --cpu-percent 7.2 --check --scenario processor/

memory-check: $(STAMP) ## Every memory scenario under each function's template MemorySize: fails on a kill, a crash, no answer, a 5xx or another answer than expected (targets: make bench-memory)
	cargo build --release $(addprefix -p ,$(FUNCTIONS))
	cargo build --quiet -p webhook-bench
	$(WEBHOOK_BENCH) memory --runs $(MEMORY_RUNS) --limit-from-template --check

# The event processor beside a Python peer (bench/python-processor-peer: Powertools' BatchProcessor
# + idempotency on DynamoDB, boto3), the same SQS batches of fresh Trybe envelopes, against one
# moto; CPU per processed event, init, first batch, peak RSS (processor-peer.md). Not part of
# `make test`. PROCESSOR_WARM batches follow the first one in each of PROCESSOR_RUNS cold starts.
.PHONY: bench-processor
PROCESSOR_RUNS ?= 5
PROCESSOR_WARM ?= 49

bench-processor: $(STAMP) $(BENCH_STAMP) ## Our event processor beside a Python peer (Powertools BatchProcessor + idempotency): CPU per processed event, batches of 10 and of 1
	cargo build --release -p event-processor
	cargo build --quiet -p webhook-bench
	$(WEBHOOK_BENCH) processor --runs $(PROCESSOR_RUNS) --warm $(PROCESSOR_WARM) --batch-size 10
	$(WEBHOOK_BENCH) processor --runs $(PROCESSOR_RUNS) --warm $(PROCESSOR_WARM) --batch-size 1
