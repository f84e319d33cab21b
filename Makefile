# kgswitch: `make demo` and `make test` install what they need, then run.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(shell go env GOPATH 2>/dev/null || echo /root/go)/bin:/usr/sbin:/sbin
GO ?= go

.PHONY: all build deps demo test check unit integration bench fuzz clean

all: build

build:
	$(GO) build -o bin/kgswitch ./cmd/kgswitch

deps:
	@scripts/install-deps.sh

## demo: build the netns lab, move a guest from its home host to a foreign host, explain what happened.
demo: deps
	$(GO) run ./tests/integration/cmd/demo

## test: static checks, unit tests (race detector) and the netns/OVS integration tests (needs root).
test: deps check unit integration

check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

# Packages whose tests need no root; the rest run under `integration`.
UNIT_PKGS := ./cmd/... ./config/... ./mipv6/... ./ndresponder/... ./netpkt/... ./switch/... ./tests/integration/lab/...

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

integration:
	$(GO) test -count=1 -timeout 15m ./ovsctl/... ./tests/integration/...

## bench: Go benchmarks of the wire format and the datapath.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem ./mipv6/... ./switch/...

## fuzz: run each fuzz target for FUZZTIME (default 20s).
FUZZTIME ?= 20s
fuzz:
	@for pkg in ./netpkt ./ndresponder ./mipv6 ./switch ./tests/integration/labha; do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep ^Fuzz); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf bin
