# storekeeper — see README.md. Every target works on a fresh clone.
GO          ?= go
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
DATA_DIR    ?= ./data
BACKUP_DIR  ?= ./backups

.PHONY: run test bench lint build clean

## run: the store demo (three churned stores in $(DATA_DIR): compacted, verified, backed up into $(BACKUP_DIR), one restored)
run:
	$(GO) run ./cmd/storekeeper demo --data-dir $(DATA_DIR) --backup-dir $(BACKUP_DIR)

## test: the whole suite, with the race detector
test:
	$(GO) test -race ./...

## bench: Go benchmarks beside their raw baselines; writes docs/BENCHMARKS.md
bench:
	$(GO) run ./internal/benchreport -out docs/BENCHMARKS.md

## lint: go vet, gofmt and staticcheck
lint: $(STATICCHECK)
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(STATICCHECK) ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## build: the binary in bin/
build:
	$(GO) build -o bin/storekeeper ./cmd/storekeeper

clean:
	rm -rf bin $(DATA_DIR) $(BACKUP_DIR)
