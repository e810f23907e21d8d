# chatr: `make run` starts a node, `make test` installs what tests need and runs them all,
# `make chaos` runs the fault-injection suite longer.
GO ?= go
# FUZZTIME, when set (say 60s or 1000000x), runs every fuzz target that
# long; by default each runs a count of inputs (about 10 s here).
FUZZTIME ?=

.PHONY: unit-nats run build test deps vet unit chaos-short chaos fuzz bench clean

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

run:
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/chatr

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/chatr ./cmd/chatr

# deps installs what the tests need on a fresh Debian machine (as root):
# Chromium for the browser tests, iproute2 for the network-namespace tests.
deps:
	@if [ ! -x /usr/bin/chromium ] || ! command -v ip >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium iproute2 >/dev/null; \
		else \
			echo "make deps: run as root to install chromium and iproute2 (apt-get)"; \
		fi; \
	fi

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

# vet also builds the binary for macOS and Windows: netpoll (epoll) is
# Linux-only, and elsewhere sessions fall back to a reader goroutine each.
vet:
	$(GO) vet ./...
	GOOS=darwin $(GO) build -o /dev/null ./cmd/chatr
	GOOS=windows $(GO) build -o /dev/null ./cmd/chatr
	$(GO) run $(STATICCHECK) ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed on: $$out"; exit 1; fi

unit: unit-nats
	$(GO) test -race -count=1 -timeout 12m ./...

# unit-nats runs the gateway's protocol, API, input and resume tests, and
# the browser suite, again on the NATS engine (a JetStream server per test
# server, or per browser test): one table of engines, not copies of tests.
# Skipped are the gateway tests that look into the local store itself (its
# metrics, its vector, a closed store) and the browser tests that want a
# message's id to name the node that took it (on NATS it names the stream).
NATS_ONLY_LOCAL = ^(TestAdminListener|TestPagesAndProbes|TestClientCausedLogsAreLimited|TestPostAckAfterCommit)$$
NATS_BROWSER_LOCAL = ^(TestFailoverAfterKill9|TestPageFailsOverWhenItsNodeStops)$$
unit-nats:
	$(GO) test -race -count=1 -timeout 8m -skip '$(NATS_ONLY_LOCAL)' ./internal/gateway -args -engine nats
	$(GO) test -count=1 -timeout 8m -skip '$(NATS_BROWSER_LOCAL)' ./test/browser -args -engine nats

# fuzz runs each fuzz target briefly: the WebSocket frame decoder, names, cursors,
# the message and presence frames the hub encodes (against encoding/json),
# the HTTP message body, the binary batches of peer links, the frames
# and hello of a link's handshake, tokens, and the records of the store's log.
# Each runs a count of inputs, not a time: with a time, Go 1.26's fuzzing
# coordinator can fail a target with a bare "context deadline exceeded" as
# the time runs out (golang/go#75804, fixed in Go 1.27), as CI runs here did.
fuzz_target = $(GO) test -run '^$$' -fuzz '^$(1)$$' -fuzztime $(or $(FUZZTIME),$(3)) -fuzzminimizetime 200x $(2)
fuzz:
	$(call fuzz_target,FuzzDecodeInbound,./internal/proto,600000x)
	$(call fuzz_target,FuzzClean,./internal/names,600000x)
	$(call fuzz_target,FuzzDecodeCursor,./internal/proto,600000x)
	$(call fuzz_target,FuzzMessageFrame,./internal/proto,100000x)
	$(call fuzz_target,FuzzPresenceFrames,./internal/proto,50000x)
	$(call fuzz_target,FuzzDecodePost,./internal/gateway,50000x)
	$(call fuzz_target,FuzzDecodeBatch,./internal/replication/wire,600000x)
	$(call fuzz_target,FuzzLinkHandshake,./internal/replication/wire,600000x)
	$(call fuzz_target,FuzzVerify,./internal/auth,150000x)
	$(call fuzz_target,FuzzDecodeRecord,./internal/store,120000x)

# chaos-short is the one seed of the fault-injection suite (test/chaos: real
# nodes in network namespaces, as root) that make test runs. It is a step of
# its own, not part of go test ./... (which skips it without CHATR_CHAOS),
# so that it does not share two cores with every other package: about two
# minutes. It runs one fixed seed, so that CI is repeatable (make chaos
# explores fresh ones); SEED=N runs another.
CHAOS_SHORT ?= 70s
CHAOS_SEED ?= 1
chaos-short:
	CHATR_CHAOS=1 CHAOS_DURATION=$(CHAOS_SHORT) CHATR_SEED=$(or $(SEED),$(CHAOS_SEED)) \
		$(GO) test -race -count=1 -timeout 8m -run '^TestChaos$$' ./test/chaos

# chaos runs longer schedules of the suite, as root:
#   make chaos SEED=N DURATION=5m NODES=5
# Without SEED it runs RUNS fresh seeds, one after the other, and prints
# each failing seed with the command that replays it. CHAOSFLAGS=-v shows
# the schedule of passing runs too.
DURATION ?= 5m
NODES ?= 3
RUNS ?= 3
CHAOS_TIMEOUT ?= 3h
CHAOSFLAGS ?=
chaos:
	@if [ -n "$(SEED)" ]; then seeds="$(SEED)"; \
	else seeds=$$(for i in $$(seq $(RUNS)); do echo $$(( $$(od -An -N4 -tu4 /dev/urandom) + 1 )); done); fi; \
	failed=""; \
	for s in $$seeds; do \
		echo "== chaos: seed $$s, $(NODES) nodes, $(DURATION) of faults"; \
		if CHATR_CHAOS=1 CHATR_SEED=$$s CHAOS_DURATION=$(DURATION) CHAOS_NODES=$(NODES) \
			$(GO) test -race -count=1 -timeout $(CHAOS_TIMEOUT) -run '^TestChaos$$' $(CHAOSFLAGS) ./test/chaos; then \
			echo "== chaos: seed $$s passed"; \
		else \
			echo "== chaos: seed $$s FAILED; replay: make chaos SEED=$$s DURATION=$(DURATION) NODES=$(NODES)"; \
			failed="$$failed $$s"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "== chaos: failing seeds:$$failed"; exit 1; fi

test: deps vet unit fuzz chaos-short

# bench runs a short version of every scenario of BENCHMARKS.md (< 3 min);
# scripts/bench.sh full runs the longer ones recorded there.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1s ./internal/store ./internal/hub
	scripts/bench.sh

clean:
	rm -rf bin tmp
