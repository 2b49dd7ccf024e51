#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL 15 cluster for tests.
#
#   scripts/postgres.sh start DIR PORT   initialise DIR if needed, start the cluster on
#                                        127.0.0.1:PORT, print its URL on stdout
#   scripts/postgres.sh stop DIR         stop the cluster in DIR (if it runs)
#
# The cluster is built for speed, not durability (fsync off): never keep data in it.
# It listens on loopback only, with trust authentication, and has no Unix socket.
# Installs Debian's postgresql package when the server binaries are missing.
set -euo pipefail

readonly PGBIN=/usr/lib/postgresql/15/bin

usage() {
	echo "usage: $0 start DIR PORT | stop DIR" >&2
	exit 2
}

source "$(dirname "$0")/apt.sh"

log() { echo "postgres.sh: $*" >&2; }

# PostgreSQL refuses to run as root; root runs it as the postgres system user.
as_owner() {
	if [[ $EUID -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

ensure_installed() {
	if [[ -x $PGBIN/pg_ctl ]] && id postgres >/dev/null 2>&1; then
		return
	fi
	if [[ $EUID -ne 0 ]]; then
		log "PostgreSQL 15 is not installed and only root can install it (apt-get install postgresql)"
		exit 1
	fi
	log "installing PostgreSQL (apt-get install postgresql)"
	apt_install postgresql
}

# running_port prints the port of the cluster running in $1, or fails when none runs.
running_port() {
	as_owner "$PGBIN/pg_ctl" -D "$1" status >/dev/null 2>&1 || return 1
	sed -n 4p "$1/postmaster.pid"
}

url() { echo "postgres://postgres@127.0.0.1:$1/postgres?sslmode=disable"; }

start() {
	local dir port=$2
	dir=$(realpath -m -- "$1")
	[[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || { log "bad port: $port"; exit 2; }
	ensure_installed

	mkdir -p "$dir"
	if [[ $EUID -eq 0 ]]; then
		chown postgres:postgres "$dir"
	fi
	chmod 700 "$dir"
	if ! as_owner test -w "$dir"; then
		log "$dir is not reachable by the postgres user (are its parent directories searchable?); try a directory under /tmp"
		exit 1
	fi

	local current
	if current=$(running_port "$dir"); then
		if [[ $current != "$port" ]]; then
			log "the cluster in $dir already runs on port $current, not $port"
			exit 1
		fi
		url "$port"
		return
	fi

	if [[ ! -s $dir/PG_VERSION ]]; then
		log "initialising a cluster in $dir"
		as_owner "$PGBIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 --no-sync >&2
	fi

	log "starting on 127.0.0.1:$port"
	as_owner "$PGBIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start -o "\
		-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='' \
		-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2 ||
		{ log "start failed; the server log follows"; tail -n 20 "$dir/server.log" >&2; exit 1; }

	# pg_ctl -w returns once the postmaster says it is ready; confirm over TCP, the way tests connect.
	local i
	for ((i = 0; i < 60; i++)); do
		if as_owner "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
			url "$port"
			return
		fi
		sleep 0.5
	done
	log "the server did not accept connections on 127.0.0.1:$port within 30s"
	exit 1
}

stop() {
	local dir
	dir=$(realpath -m -- "$1")
	if ! running_port "$dir" >/dev/null; then
		log "no cluster runs in $dir"
		return
	fi
	as_owner "$PGBIN/pg_ctl" -D "$dir" -m fast -w stop >&2
}

case ${1:-} in
start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
*) usage ;;
esac
