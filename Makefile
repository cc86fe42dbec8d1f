# The two commands a new machine needs: `make run` (the sample CI pipeline) and `make test` (the suite).
.PHONY: run test setup build lint bench

run: setup
	./scripts/run-demo.sh

test: setup
	npm test

setup:
	@./scripts/setup.sh

build:
	npx tsc -p tsconfig.json

lint:
	npx eslint src bench
