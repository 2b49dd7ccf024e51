#!/usr/bin/env bash
# Installs Debian's chromium for the live viewer's browser test (rest/
# viewer_test.go drives it headless through chromedp). Idempotent: a chromium
# already on PATH is left alone. Prints the browser's path on stdout.
#
#   scripts/chromium.sh
set -euo pipefail

source "$(dirname "$0")/apt.sh"

log() { echo "chromium.sh: $*" >&2; }

if ! command -v chromium >/dev/null 2>&1; then
	log "chromium is missing: installing Debian's chromium"
	apt_install chromium
fi
path=$(command -v chromium)
log "using $path ($("$path" --version 2>/dev/null || echo "version unknown"))"
echo "$path"
