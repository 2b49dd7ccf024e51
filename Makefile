# coderun — two commands: `make run` (the service on the embedded default, with
# a demo runtime) and `make test` (every test, against the real services).
GO ?= go

.PHONY: run test build bench generate check-generated vet clean

## run: start the service on SQLite and local Docker, with a ready demo runtime
run:
	@scripts/run.sh

## test: start Docker, PostgreSQL and a loopback registry as needed; run all tests with -race
test:
	@scripts/test.sh

## build: the coderun binary into bin/
build:
	$(GO) build -trimpath -o bin/coderun ./cmd/coderun
	GOOS=linux CGO_ENABLED=0 $(GO) build -trimpath -o bin/coderun-init ./cmd/coderun-init

## generate: regenerate the GraphQL code in graph/
generate:
	$(GO) generate ./...

## check-generated: fail when graph/ is not what go generate makes
check-generated:
	@scripts/check-generated.sh

vet:
	$(GO) vet ./...

clean:
	rm -rf bin

## bench: submit→terminal latency of hello world against bare docker run --rm
bench: build
	@scripts/docker.sh start >/dev/null
	@scripts/demo-image.sh >/dev/null
	$(GO) run ./cmd/coderun-bench
