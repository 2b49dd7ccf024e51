#!/usr/bin/env bash
# Starts a Docker engine for coderun's tests and demos, the way DESIGN.md
# describes: Debian's docker.io, no bridge network (runs use network "none"),
# no iptables. Idempotent: an engine that already answers is left alone.
#
#   scripts/docker.sh start [LOGDIR]   (LOGDIR defaults to $CODERUN_STATE_DIR or /tmp/coderun)
set -euo pipefail

source "$(dirname "$0")/apt.sh"

log() { echo "docker.sh: $*" >&2; }

usage() {
	echo "usage: $0 start [LOGDIR]" >&2
	exit 2
}

engine_answers() { docker info >/dev/null 2>&1; }

install_engine() {
	command -v dockerd >/dev/null 2>&1 && return
	log "dockerd is missing: installing docker.io"
	apt_install docker.io
}

start() {
	local logdir=${1:-${CODERUN_STATE_DIR:-/tmp/coderun}}
	if engine_answers; then
		log "engine already running"
		return
	fi
	install_engine
	mkdir -p "$logdir"
	log "starting dockerd (log: $logdir/dockerd.log)"
	# setsid + nohup: the engine must outlive this script and its session.
	setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
		>>"$logdir/dockerd.log" 2>&1 </dev/null &
	echo $! >"$logdir/dockerd.pid"
	local i
	for ((i = 0; i < 60; i++)); do
		if engine_answers; then
			log "engine ready (pid $(cat "$logdir/dockerd.pid"))"
			return
		fi
		sleep 1
	done
	log "engine did not answer within 60 s; last lines of $logdir/dockerd.log:"
	tail -n 20 "$logdir/dockerd.log" >&2 || true
	exit 1
}

case ${1:-} in
start) start "${2:-}" ;;
*) usage ;;
esac
