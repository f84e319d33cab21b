# kgswitch: `make demo` and `make test` install what they need, then run.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(shell go env GOPATH 2>/dev/null || echo /root/go)/bin:/usr/sbin:/sbin
GO ?= go

.PHONY: all build deps demo test check unit integration bench fuzz fuzz-brief clean

all: build

build:
	$(GO) build -o bin/kgswitch ./cmd/kgswitch

deps:
	@scripts/install-deps.sh

## demo: build the netns lab, move a dual-stack guest from its home host to a foreign host and back, explain what happened.
demo: deps
	$(GO) run ./tests/integration/cmd/demo

## test: static checks, unit tests (race detector), every fuzz target briefly, and the
## netns/OVS integration tests (needs root).
test: deps check unit fuzz-brief integration

check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

# Packages whose tests need no root; the rest run under `integration`.
# tests/interop runs tshark and scapy against mipv6's wire format, esp's ESP,
# v4responder's ARP and DHCP, and the datapath's IPv4-in-IPv6 tunnel.
UNIT_PKGS := ./cmd/... ./config/... ./clock/... ./datapath/... ./esp/... ./mipv6/... ./ndresponder/... ./netpkt/... ./switch/... \
	./tests/integration/lab/... ./tests/interop/... ./v4responder/...

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# Most integration tests run in parallel, each in its own lab, and mostly
# wait: -parallel lets all of them run at once (tests/integration/lab_test.go
# says which stay sequential and why).
integration:
	$(GO) test -count=1 -timeout 15m -parallel 32 ./hostio/... ./ovsctl/... ./tests/integration/...

## bench: every figure of bench/README.md in one run of the netns lab (needs root):
## throughput, packet rate and RTT at home vs. through the Home Agent and kgswitch,
## kgswitch's CPU per GB and memory, and the datapath's Go benchmarks. Prints a
## table and writes it as JSON under bench/results/. Then a SIGHUP reload of
## 1,000 and 10,000 VMs against the lab's Open vSwitch, and the same reload
## with an in-memory flow table (kgswitch's own share).
bench: deps
	$(GO) run ./tests/integration/cmd/bench -out bench/results
	$(GO) test -run '^$$' -bench BenchmarkSIGHUPReload -benchtime 1x ./tests/integration/
	$(GO) test -run '^$$' -bench BenchmarkReload -benchtime 1x ./switch/

## fuzz: run each fuzz target for FUZZTIME (default 20s); fuzz-brief: 10000 inputs each, part of `test`.
## (A count, not a duration: a duration that ends mid-input makes go test report a spurious
## "context deadline exceeded" failure.)
## A failing input is kept in the package's testdata/fuzz/ and from then on runs with `go test`:
## commit it with the fix.
FUZZTIME ?= 20s
# Every package with a fuzz target, found in the tree so that new ones are fuzzed too.
FUZZ_PKGS = $(sort $(dir $(shell grep -rl --include='*_test.go' '^func Fuzz' .)))
# Each package's test binary is built once, instrumented for fuzzing (go test
# -c -fuzz), and runs its targets one after the other as go test -fuzz would:
# in the package's directory (testdata/fuzz) and with go test's cache of
# interesting inputs. (go test -fuzz builds and links the binary again for
# every target, which took most of fuzz-brief's time.)
define run-fuzz
	@set -e; bins=$$(mktemp -d); trap 'rm -rf "$$bins"' EXIT; cache=$$($(GO) env GOCACHE)/fuzz; \
	for pkg in $(FUZZ_PKGS); do \
		path=$$($(GO) list $$pkg); bin=$$bins/$$(echo $$path | tr / _).test; \
		$(GO) test -c -fuzz . -o $$bin $$pkg; \
		for f in $$(cd $$pkg && $$bin -test.list '^Fuzz' | grep ^Fuzz); do \
			echo "== $$pkg $$f ($(1))"; \
			(cd $$pkg && $$bin -test.run '^$$' -test.fuzz "^$$f$$" -test.fuzztime $(1) -test.fuzzcachedir $$cache/$$path); \
		done; \
	done
endef

fuzz:
	$(call run-fuzz,$(FUZZTIME))

fuzz-brief:
	$(call run-fuzz,10000x)

clean:
	rm -rf bin
