# Two set-up commands for a fresh machine: `make run` and `make test`.
# Both install what is missing (scripts/install-deps.sh), build, then run.
#
#   make run                      start the qm server (127.0.0.1:7070, state
#                                 in ./var/qm; LISTEN=, STATE=, CONFIG= change
#                                 them); Ctrl-C stops it
#   make demo                     the same with a demo workload (qm serve
#                                 --demo, state in var/qm-demo): open
#                                 http://127.0.0.1:7070/ to watch it
#   make test                     build and run the whole suite through ctest
#   make test SANITIZE=address,undefined   the same under sanitizers
#   make bench                    build and run the benchmarks (Release)
#   make bench-peers              qm serve against Redis, PostgreSQL and etcd
#                                 on the same workload (bench/peers.sh;
#                                 SECONDS_PER_RUN=, ROUNDS=, CLIENTS=)
#   make format / make lint       clang-format the tree / check it
MAKEFLAGS += --no-print-directory
JOBS ?= $(shell nproc)
SANITIZE ?=
BUILD_TYPE ?= RelWithDebInfo
ifeq ($(SANITIZE),)
BUILD_DIR ?= build
else
BUILD_DIR ?= build-san
BUILD_TYPE = Debug
endif

SOURCES = $(shell find include src tests bench -name '*.h' -o -name '*.cc' 2>/dev/null)

.PHONY: all deps configure build run demo test bench bench-peers format lint clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DQM_SANITIZE="$(SANITIZE)" >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

LISTEN ?= 127.0.0.1:7070
STATE ?= var/qm
CONFIG ?=

run: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target qm >/dev/null
	@exec $(BUILD_DIR)/qm serve --listen $(LISTEN) --state $(STATE) \
	  $(if $(CONFIG),--config $(CONFIG)) $(if $(DEMO),--demo)

# `make run` with a made-up fleet (qm serve --demo) in a state of its own,
# so the dashboard (http://127.0.0.1:7070/) and `qm top` show something move.
demo:
	@$(MAKE) run STATE=var/qm-demo DEMO=1

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: deps
	@cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build build-bench -j $(JOBS) --target qm_bench qm qm_monitor_bench
	@build-bench/bench/qm_bench --benchmark_filter=-Memory \
	  --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
	@# Memory in a process of its own, so the resident set is its alone.
	@build-bench/bench/qm_bench --benchmark_filter=Memory
	@# The sampler's cost and the reclaim latency on a real server.
	@build-bench/bench/qm_monitor_bench --benchmark_repetitions=3
	@# One `qm allocate` from the CLI, end to end (a process per call).
	@python3 bench/cli_latency.py build-bench/qm

# Installs and starts its own Redis, PostgreSQL and etcd (loopback, temporary
# directories), builds in build-bench; not part of `make test`.
bench-peers: deps
	@JOBS=$(JOBS) bench/peers.sh

format: deps
	@clang-format -i $(SOURCES)

lint: deps
	@clang-format --dry-run --Werror $(SOURCES)

clean:
	@rm -rf build build-san build-bench
