#!/usr/bin/env bash
# test.sh is the whole test suite: the README's test command, and what CI
# runs (.ci/run). It needs only Go, git and root on a fresh Debian 12:
# scripts/deps.sh installs the rest (Go modules, xenstore-utils, iproute2,
# Xen's test-xenstore). Not make, which a fresh Debian does not have.
#
#   scripts/test.sh                      deps, gofmt, go vet, go test ./...
#   TESTFLAGS=-v scripts/test.sh         extra go test flags
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

scripts/deps.sh

# Committed files only: that is what CI sees, and others' work in progress
# in a shared checkout should not fail everyone's run.
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed:"
	echo "$unformatted"
	exit 1
fi
echo "go vet ./..."
$GO vet ./...
echo "go test -count=1 -timeout 12m ${TESTFLAGS:-} ./..."
# shellcheck disable=SC2086 # TESTFLAGS is a list of flags
$GO test -count=1 -timeout 12m ${TESTFLAGS:-} ./...
