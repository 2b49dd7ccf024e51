#!/usr/bin/env bash
# `make test`: brings up every service the tests use — the Docker engine, a
# loopback registry, a throwaway PostgreSQL and Chromium — installing them from
# Debian's packages where missing, then runs the checks and every test with -race.
# Nothing is skipped: CODERUN_TEST_REQUIRE_SERVICES=1 turns a missing service
# into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

state=${CODERUN_STATE_DIR:-/tmp/coderun}
mkdir -p "$state"
export CODERUN_STATE_DIR=$state

scripts/docker.sh start "$state"
# Built once here (installing busybox-static if need be) before test packages,
# running in parallel, each ask for it.
scripts/demo-image.sh >/dev/null
export CODERUN_TEST_REGISTRY=${CODERUN_TEST_REGISTRY:-127.0.0.1:5000}
scripts/registry.sh start "$CODERUN_TEST_REGISTRY"
CODERUN_TEST_POSTGRES_URL=${CODERUN_TEST_POSTGRES_URL:-$(scripts/postgres.sh start "$state/postgres" 55432)}
export CODERUN_TEST_POSTGRES_URL
CODERUN_TEST_CHROMIUM=${CODERUN_TEST_CHROMIUM:-$(scripts/chromium.sh)}
export CODERUN_TEST_CHROMIUM
export CODERUN_TEST_REQUIRE_SERVICES=1

echo "== gofmt" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo "== go vet" >&2
go vet ./...
echo "== generated code" >&2
scripts/check-generated.sh
echo "== go test -race" >&2
go test -race -count=1 -timeout 15m ./...

# In CI, a short fuzzing pass of every fuzz target after the tests. Each
# target runs a fixed number of executions rather than a fixed time: Go
# 1.26's fuzz coordinator can report a spurious "context deadline exceeded"
# when a -fuzztime duration ends while a worker is busy (golang/go#75804),
# and a count has no deadline to race. All of them take about a minute here.
if [[ -n ${CI:-} ]]; then
	echo "== fuzz (a fixed number of executions each)" >&2
	for target in \
		auth:FuzzParsePAT:100000 auth:FuzzAuthenticate:100000 auth:FuzzJWT:50000 \
		rest:FuzzPutRuntime:5000 rest:FuzzSubmitRun:10000 rest:FuzzDecodeJSON:20000 \
		rest:FuzzReportSupportIssue:5000 resolvers:FuzzGraphQL:5000; do
		IFS=: read -r pkg name count <<<"$target"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "${count}x" -fuzzminimizetime 1s "./${pkg}"
	done
fi
