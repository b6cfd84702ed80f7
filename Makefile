# Moat: image trust for OPA Gatekeeper. `make help` lists the targets.

GO        ?= go
BIN       := bin/moat
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
IMAGE     ?= moat:$(VERSION)
# A count, not a duration: go1.26's fuzz coordinator can report its own -fuzztime deadline as a
# failure (golang/go#75804, fixed in go1.27), which a count never reaches.
FUZZTIME  ?= 100000x
BENCHTIME ?= 5s
HELM      := $(GO) tool -modfile=tools/helm/go.mod helm

.PHONY: help deps build run run-check test unit e2e e2e-node fuzz lint policy chart-policy generate bench bench-admission image clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: ## the Debian packages the tests need (redis-server), pinned; installed when missing
	./hack/deps.sh

build: ## build bin/moat (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./provider/cmd/moat

run: build ## dev certificates, a local registry with sample images, moat serve, and lookups against it
	./hack/run.sh

run-check: build ## run `make run` once, non-interactively, and fail if any step fails
	MOAT_RUN_ONCE=1 MOAT_REGISTRY_PORT=15001 MOAT_PORT=18443 MOAT_METRICS_PORT=18080 ./hack/run.sh

test: deps lint unit fuzz policy chart-policy run-check e2e e2e-node ## everything CI runs

unit: deps ## unit, integration and Gatekeeper-client tests
	$(GO) test -race -count=1 ./provider/...
	$(GO) test -count=1 -timeout 30m $(shell $(GO) list ./test/... | grep -v -e /test/e2e -e /test/node)
	cd tools/helm && $(GO) test -count=1 ./...

# The first run builds kube-apiserver, kube-controller-manager, etcd and Gatekeeper into
# $(MOAT_E2E_CACHE) (default ~/.cache/moat-e2e): about eight minutes cold, then reused.
e2e: deps ## end to end: a real API server, controller manager, etcd and Gatekeeper, with moat serve (test/e2e)
	$(GO) test -count=1 -timeout 40m -v ./test/e2e/

# Builds, once, kubelet, kube-scheduler, kube-proxy, containerd, CoreDNS and helm into the same cache (about
# fifteen minutes cold on two cores); needs root, and runc, the CNI plugins and iptables (make deps).
e2e-node: deps ## helm install on a real one-node cluster: kubelet, containerd, CoreDNS, Gatekeeper's chart, Moat's chart (test/node)
	$(GO) test -count=1 -timeout 45m -v ./test/node/

fuzz: ## each fuzz target for FUZZTIME executions (default 100000x; FUZZTIME=20000000x for a longer run)
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./provider/internal/reference
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./provider/internal/protocol
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeFast$$' -fuzztime=$(FUZZTIME) ./provider/internal/protocol
	$(GO) test -run='^$$' -fuzz='^FuzzKey$$' -fuzztime=$(FUZZTIME) ./provider/internal/lookup
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./provider/internal/firstseen

generate: ## templates/*.yaml and templates/README.md from src/templates and src/library/; the chart's files/
	$(GO) run ./src/gen

# Suites whose templates call external_data, which gator cannot load: moat verify runs them.
EXTERNAL_SUITES := $(patsubst %/external-data.yaml,%,$(wildcard gator-suites/*/external-data.yaml))
GATOR_SUITES    := $(filter-out $(EXTERNAL_SUITES),$(patsubst %/suite.yaml,%,$(wildcard gator-suites/*/suite.yaml)))
EXTERNAL_CALL   := external_data(
PLAIN_TEMPLATES  = $(shell grep -L '$(EXTERNAL_CALL)' templates/*.yaml)

policy: build ## templates up to date; gator suites pass with CEL and with Rego; moat verify passes every suite
	$(GO) run ./src/gen -check
	@for s in $(GATOR_SUITES); do $(GO) tool gator verify ./$$s || exit 1; done
	@for s in $(GATOR_SUITES); do $(GO) tool gator verify --enable-k8s-native-validation=false ./$$s || exit 1; done
	./$(BIN) verify ./gator-suites/...
	./$(BIN) verify --enable-k8s-native-validation=false ./gator-suites/...

chart-policy: ## the chart's own pods pass the Pod Security Standards (restricted), through gator
	@mkdir -p .run
	$(HELM) lint --strict charts/moat --kube-version 1.34.0
	$(HELM) template moat charts/moat -n moat-check --kube-version 1.34.0 \
	  --set policies.templates=false --set policies.expansion=false --set scanner.mode=service > .run/chart.yaml
	$(GO) tool gator test $(addprefix -f ,$(PLAIN_TEMPLATES)) -f constraints/expansion/ \
	  -f constraints/pss/baseline/ -f constraints/pss/restricted/ -f .run/chart.yaml 2>/dev/null

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l provider test src tools); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags moat_slim ./provider/cmd/moat
	$(GO) tool staticcheck ./...
	cd tools/helm && $(GO) vet ./...
	cd tools/psa && $(GO) vet ./...

bench: build ## benchmarks with their figures (see README "Performance")
	$(GO) test -run='^$$' -bench=MemoryPerCachedEntry -benchtime=1x -count=1 ./provider/internal/lookup
	$(GO) test -run='^$$' -bench=CachedLookup -count=1 ./provider/internal/lookup
	$(GO) test -run='^$$' -bench=ScannerMemory -benchtime=1x -count=1 ./provider/internal/grypescan
	$(GO) test -run='^$$' -bench=ScanSmallImage -benchtime=3s -count=1 ./provider/internal/grypescan
	$(GO) test -run='^$$' -bench=SharedReport -benchtime=2000x -count=1 ./provider/internal/shared
	./$(BIN) bench --duration $(BENCHTIME)
	$(GO) test -run='^$$' -bench=DefenderSet -benchtime=3s -cpu 1 ./test/templates
	$(GO) test -run='^$$' -bench='Templates|FrameworkFloor' -benchtime=1000x -cpu 1 ./test/templates

bench-admission: deps ## admission latency and audit through a real API server and Gatekeeper (test/admission)
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout=60m ./test/admission

image: ## container image (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

clean:
	rm -rf bin .run
