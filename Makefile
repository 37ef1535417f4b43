# storekeeper — see README.md. Every target works on a fresh clone.
GO          ?= go
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
DATA_DIR    ?= ./data
BACKUP_DIR  ?= ./backups
OFFSITE_DIR ?= ./offsite
LISTEN      ?= 127.0.0.1:8080

.PHONY: run test bench chaos scale fuzz lint build clean

## run: build, then the all-in-one server with demo stores in $(DATA_DIR) on an in-process Redis, backups and every write also shipped to $(OFFSITE_DIR) (a stand-in for object storage): dashboard at http://$(LISTEN)/
run: build
	./bin/storekeeper serve --demo --listen $(LISTEN) --data-dir $(DATA_DIR) --backup-dir $(BACKUP_DIR) \
		--backup-target 'demo=file://$(abspath $(OFFSITE_DIR))?create_dir=1'


## test: the whole suite, with the race detector
test:
	$(GO) test -race ./...

## bench: Go benchmarks beside their raw baselines; writes docs/BENCHMARKS.md
bench:
	$(GO) run ./internal/benchreport -out docs/BENCHMARKS.md

## chaos: the long model test of restores to a moment (PITR_MODEL=long; make test runs its short version), then the multi-process soak under random faults (DURATION, SEED: 0 = random, printed), then LOSS_WINDOW with --redis-min-replicas 0 and only failovers; writes docs/CHAOS.md
DURATION ?= 10m
SEED     ?= 0
CHAOS_REPORT ?= docs/CHAOS.md
LOSS_WINDOW  ?= 2m
PITR_MODEL   ?= long
chaos:
	@if [ "$(PITR_MODEL)" = long ]; then \
		STOREKEEPER_LONG=1 $(GO) test -count=1 -run '^TestRestoreToAnyMomentMatchesTheModel$$' ./ship; fi
	$(GO) run ./internal/chaos/cmd/chaos -duration $(DURATION) -seed $(SEED) -report "$(CHAOS_REPORT)" -loss-window-run $(LOSS_WINDOW)

## scale: the bulk enqueue over SCALE_BULK stores, a /metrics collection over SCALE_METRICS stores, what idle worker nodes cost one Redis at SCALE_NODES nodes and each SCALE_INTERVALS --task-check-interval, then SCALE_NODES nodes of SCALE_STORES fake stores each at SCALE_STORES_INTERVAL (docs/SCALING.md)
SCALE_BULK      ?= 1000,10000,100000
SCALE_METRICS   ?= 1000,10000,100000
SCALE_NODES     ?= 10,100,1000
SCALE_INTERVALS ?= 20ms,100ms,250ms,1s
SCALE_STORES    ?= 100
SCALE_STORES_INTERVAL ?= 1s
SCALE_STORES_ARGS ?= -window 180s -schedule "*/10 * * * *" -spread 10m -watchers 1000
scale:
	$(GO) run ./internal/scale/cmd/scale -bulk "$(SCALE_BULK)" -metrics "$(SCALE_METRICS)" -nodes "$(SCALE_NODES)" -intervals $(SCALE_INTERVALS)
	$(GO) run ./internal/scale/cmd/scale -nodes "$(SCALE_NODES)" -stores $(SCALE_STORES) -intervals $(SCALE_STORES_INTERVAL) $(SCALE_STORES_ARGS)

## fuzz: every fuzz target for FUZZTIME each (their seed corpora also run in make test)
FUZZTIME ?= 30s
FUZZ_TARGETS := ./api:FuzzDecodeStrict ./api:FuzzCheckOrigin ./api:FuzzWatchFilters \
	./jobs:FuzzPushEndpoint ./jobs:FuzzHistoryCursor ./jobsdb:FuzzDecodeHistoryJSON ./store:FuzzValidateName ./internal/e2e:FuzzRequests \
	./ship:FuzzSegment
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "==> $$fn ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

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
	rm -rf bin $(DATA_DIR) $(BACKUP_DIR) $(OFFSITE_DIR)
