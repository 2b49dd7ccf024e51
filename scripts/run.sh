#!/usr/bin/env bash
# `make run`: coderun on the embedded default — SQLite under ./data and the
# local Docker engine (installed from Debian's docker.io and started if
# missing). Builds a demo runtime image, creates the `demo` handle, a token and
# a validated `busybox` runtime, prints the token and a curl example, and keeps
# serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "run.sh: $*" >&2; }

export CODERUN_DATA_DIR=${CODERUN_DATA_DIR:-./data}
export CODERUN_ADDR=${CODERUN_ADDR:-127.0.0.1:8080}
state=${CODERUN_STATE_DIR:-/tmp/coderun}
base=http://$CODERUN_ADDR

scripts/docker.sh start "$state"
log "building coderun"
go build -o bin/coderun ./cmd/coderun
GOOS=linux CGO_ENABLED=0 go build -o bin/coderun-init ./cmd/coderun-init # every sandbox starts with it
image=coderun-demo/busybox:1
digest=$(scripts/demo-image.sh "$image")

bin/coderun migrate
if ! out=$(bin/coderun handle create demo --owner demo 2>&1); then
	case $out in
	*"already exists"*) log "handle demo exists" ;;
	*) echo "$out" >&2; exit 1 ;;
	esac
fi
token=$(bin/coderun token create --user demo --handle demo --scopes all --expires 720h)

bin/coderun serve &
server=$!
# Ctrl-C (or a TERM) stops the service and ends here, as a clean stop.
stop_server() {
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
}
trap stop_server EXIT
trap 'stop_server; exit 0' INT TERM
for ((i = 0; i < 100; i++)); do
	curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
	kill -0 $server 2>/dev/null || { log "coderun serve exited"; exit 1; }
	sleep 0.1
done

api() {
	curl -fsS -X "$1" "$base$2" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' ${3:+--data "$3"}
}
api PUT /v2/handles/demo/code-runtimes/busybox "$(printf '{"image":"%s","digest":"%s","command":["sh","main.sh"],"entrypointFile":"main.sh","description":"busybox sh, the demo runtime"}' "$image" "$digest")" >/dev/null
status=$(api POST /v2/handles/demo/code-runtimes/busybox/validate-image | sed -n 's/.*"validation":{"status":"\([a-z]*\)".*/\1/p')
if [[ $status != validated ]]; then
	log "the demo runtime did not validate (status: ${status:-unknown})"
	exit 1
fi

cat <<MSG

  coderun is serving on $base (SQLite in $CODERUN_DATA_DIR, Docker engine local)

  Your token for handle "demo" (all scopes, 30 days):

    export TOKEN=$token

  The demo runtime "busybox" is validated:

    curl -s $base/v2/handles/demo/code-runtimes/busybox -H "Authorization: Bearer \$TOKEN"

  Run code in it, then read what it printed:

    curl -s $base/v2/handles/demo/code-runs -H "Authorization: Bearer \$TOKEN" \\
      --data '{"runtimeKey":"busybox","code":"echo hello from \$(id -un)"}'
    curl -s $base/v2/handles/demo/code-runs/RUN_ID/output -H "Authorization: Bearer \$TOKEN"

  Watch a run live in a browser (paste the token when asked):

    $base/viewer?handle=demo&run=RUN_ID

  GraphQL:

    curl -s $base/graphql -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
      --data '{"query":"{ handle(handle: \"demo\") { runtimes { edges { node { key validation { status } } } } } }"}'

  Ctrl-C stops the service.

MSG
wait $server
