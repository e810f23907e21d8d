# chatr: `make run` starts a node, `make test` installs what tests need and runs them all.
GO ?= go
FUZZTIME ?= 10s

.PHONY: run build test deps vet unit fuzz bench clean

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

unit:
	$(GO) test -race -count=1 -timeout 12m ./...

# fuzz runs each fuzz target briefly: the WebSocket frame decoder, cursors,
# the HTTP message body and the binary batches of peer links.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeInbound$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./internal/proto
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCursor$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./internal/proto
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePost$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./internal/gateway
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBatch$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./internal/replication/wire

test: deps vet unit fuzz

# bench runs a short version of every scenario of BENCHMARKS.md (< 3 min);
# scripts/bench.sh full runs the longer ones recorded there.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1s ./internal/store ./internal/hub
	scripts/bench.sh

clean:
	rm -rf bin tmp
