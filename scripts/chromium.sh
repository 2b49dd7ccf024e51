#!/usr/bin/env bash
# Installs Debian's chromium for the live viewer's browser test (rest/
# viewer_test.go drives it headless through chromedp). Idempotent: a chromium
# already on PATH is left alone. Prints the browser's path on stdout.
#
#   scripts/chromium.sh
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

if ! command -v chromium >/dev/null 2>&1; then
	log "chromium is missing: installing Debian's chromium"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends chromium >&2; then
		apt-get update >&2
		apt-get install -y --no-install-recommends chromium >&2
	fi
fi
path=$(command -v chromium)
log "using $path ($("$path" --version 2>/dev/null || echo "version unknown"))"
echo "$path"
