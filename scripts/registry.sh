#!/usr/bin/env bash
# Runs a throwaway OCI registry (Debian's docker-registry) on a loopback address,
# so tests and demos get real manifest digests without leaving the machine. The
# engine trusts 127.0.0.0/8 registries over plain HTTP, so no TLS and no auth.
# Each address gets its own state directory: several registries may run at once.
#
#   scripts/registry.sh start [ADDR]   (ADDR defaults to 127.0.0.1:5000)
#   scripts/registry.sh stop [ADDR]
#
# State (config, storage, pid, log) lives under $CODERUN_STATE_DIR (default
# /tmp/coderun)/registry-HOST-PORT.
set -euo pipefail

source "$(dirname "$0")/apt.sh"

log() { echo "registry.sh: $*" >&2; }

usage() {
	echo "usage: $0 start|stop [ADDR]" >&2
	exit 2
}

addr=${2:-127.0.0.1:5000}
port=${addr##*:}
state=${CODERUN_STATE_DIR:-/tmp/coderun}/registry-${addr//[:.]/-}

answers() { curl -fsS -o /dev/null --max-time 2 "http://$addr/v2/" 2>/dev/null; }

running_pid() {
	local pid
	[[ -f $state/pid ]] || return 1
	pid=$(cat "$state/pid")
	kill -0 "$pid" 2>/dev/null || return 1
	echo "$pid"
}

# install_missing installs the Debian packages of the commands it is given that
# are missing (command:package pairs).
install_missing() {
	local pair pkgs=()
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
	done
	((${#pkgs[@]})) || return 0
	log "installing ${pkgs[*]}"
	apt_install "${pkgs[@]}"
}

# The Debian package may start its own service on :5000 with htpasswd auth
# (its packaged config), which the engine cannot push to without a login. Stop
# that one; ours is the registry with no auth and a throwaway store.
stop_packaged_service() {
	[[ $port == 5000 ]] || return 0
	local pid
	for pid in $(pgrep -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' || true); do
		log "stopping the packaged docker-registry service (pid $pid, auth enabled)"
		kill "$pid"
	done
}

start() {
	install_missing docker-registry:docker-registry curl:curl
	if running_pid >/dev/null && answers; then
		log "registry already running on $addr (pid $(running_pid))"
		return
	fi
	stop_packaged_service
	if answers; then
		log "something else already answers on http://$addr/v2/; not starting another registry"
		exit 1
	fi
	mkdir -p "$state/storage"
	cat >"$state/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/storage
  delete:
    enabled: true
http:
  addr: $addr
CONFIG
	log "starting docker-registry on $addr (state: $state)"
	setsid nohup docker-registry serve "$state/config.yml" >>"$state/registry.log" 2>&1 </dev/null &
	echo $! >"$state/pid"
	local i
	for ((i = 0; i < 300; i++)); do
		if answers; then
			log "registry ready on $addr (pid $(cat "$state/pid"))"
			return
		fi
		if ! running_pid >/dev/null; then
			break
		fi
		sleep 0.1
	done
	log "registry did not answer on $addr; last lines of $state/registry.log:"
	tail -n 20 "$state/registry.log" >&2 || true
	exit 1
}

stop() {
	local pid i
	if ! pid=$(running_pid); then
		log "no registry of ours running on $addr"
		rm -f "$state/pid"
		return
	fi
	log "stopping registry on $addr (pid $pid)"
	kill "$pid"
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "registry (pid $pid) ignored SIGTERM for 5 s; killing it"
		kill -KILL "$pid"
	fi
	rm -f "$state/pid"
}

case ${1:-} in
start) start ;;
stop) stop ;;
*) usage ;;
esac
