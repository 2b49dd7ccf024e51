#!/usr/bin/env bash
# Fails when the committed GraphQL code in graph/ differs from what
# `go generate ./...` makes from schema/ and gqlgen.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a graph "$tmp/before"
go generate ./...
if ! diff -r "$tmp/before" graph >"$tmp/diff"; then
	echo "check-generated: graph/ was stale; go generate changed it:" >&2
	head -n 40 "$tmp/diff" >&2
	echo "check-generated: commit the regenerated files." >&2
	exit 1
fi
echo "check-generated: graph/ is up to date" >&2
