# make test   scripts/test.sh, what CI runs (.ci/run): install deps, gofmt,
#             vet, every test
# make build  the shi binary into bin/shi
# make fuzz   each Fuzz target for FUZZTIME (the plain test run replays
#             only their seed corpora)
# make race   the tests under the race detector (about twice as slow)
# make bench-cluster  the 3-host cluster benchmarks (root; RUNS=3 for three runs)
# make bench-remote   event channels and rings between two hosts vs TCP (root)

GO       ?= go
FUZZTIME ?= 10s
TESTFLAGS ?=

.PHONY: all test deps build fuzz race clean bench-cluster bench-remote

all: build

test:
	GO=$(GO) TESTFLAGS="$(TESTFLAGS)" scripts/test.sh

deps:
	scripts/deps.sh

build:
	$(GO) build -o bin/shi ./cmd/shi

race:
	$(GO) test -count=1 -race -timeout 20m $(TESTFLAGS) ./...

fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

clean:
	rm -rf bin

# The 3-host cluster benchmarks (root, a few minutes; RUNS=3 for three runs).
bench-cluster:
	scripts/bench-cluster.sh

# Event channels and granted rings between two test hosts against TCP
# between them (root, about 4 minutes; RUNS=5 for more rounds).
bench-remote:
	scripts/bench-remote.sh
