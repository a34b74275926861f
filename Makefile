# portal — build, generate, test, bench.
GO        ?= go
BIN       := $(CURDIR)/bin
TOOLS_MOD := -modfile=$(CURDIR)/tools/go.mod
FUZZTIME  ?= 5s
PKGS      := ./...

.PHONY: all build generate check-generate proto-lint test unit fuzz vet bench soak clean tools

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/portald ./cmd/portalctl

# Plugins and buf are pinned in tools/go.mod (go tool directives).
tools:
	cd tools && $(GO) build -o $(BIN)/ github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc

generate: tools
	find proto -name '*.pb.go' -delete
	cd proto && PATH=$(BIN):$$PATH buf lint && PATH=$(BIN):$$PATH buf generate

# CI: the committed generated code must be what `make generate` produces.
check-generate: generate
	@git diff --exit-code -- proto || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { git status --porcelain -- proto; echo "make generate left untracked files"; exit 1; }

proto-lint: tools
	cd proto && PATH=$(BIN):$$PATH buf lint

vet:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 $(PKGS)

# Each fuzz target runs for FUZZTIME (go test allows one -fuzz target per run).
fuzz:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$spec/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$spec $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$spec; \
	  done; done

test: vet unit fuzz

# Benchmarks (results and the commands in docs/benchmarks.md). The
# userspace one needs root, nginx, haproxy and wrk (apt).
bench:
	$(GO) run ./bench/createsvc
	bench/userspace/run.sh
	bench/iptables/run.sh
	bench/healthcheck/run.sh
	$(MAKE) build && cd bench/etcd && $(GO) run . -portald $(BIN)/portald

# A longer linearizability run (the test suite runs 10,000 operations).
SOAK_OPS ?= 200000
soak:
	PORTAL_LINEARIZABILITY_OPS=$(SOAK_OPS) $(GO) test -count=1 -timeout 60m -run TestLinearizableUnderFaults -v ./cluster

clean:
	rm -rf $(BIN)
