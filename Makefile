# ms2m — live migration of stateful, message-driven pods.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

CACHE ?= $(HOME)/.cache/ms2m
KUBE_VERSION ?= v1.37.2
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(CACHE)/bin/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen
BIN ?= bin

export GOFLAGS ?= -mod=mod

.PHONY: all
all: build

##@ Generate
$(CONTROLLER_GEN):
	GOBIN=$(dir $(CONTROLLER_GEN)) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: generate
generate: $(CONTROLLER_GEN) ## deepcopy, CRDs, RBAC (config/ and the Helm chart)
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd rbac:roleName=ms2m-manager paths=./api/... paths=./internal/controller/... paths=./internal/identity/... paths=./internal/evacuation/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	mkdir -p charts/ms2m/crds charts/ms2m/files
	cp config/crd/bases/*.yaml charts/ms2m/crds/
	cp config/rbac/role.yaml charts/ms2m/files/manager-role.yaml
	cp config/admission/policy.yaml charts/ms2m/files/admission-policy.yaml
	cp config/webhook/webhook.yaml charts/ms2m/files/webhook.yaml

.PHONY: fmt vet
fmt:
	gofmt -l -w $$(git ls-files '*.go')
vet:
	go vet ./...

##@ Build
.PHONY: build
build: generate
	go build -o $(BIN)/ ./cmd/...

##@ Test
.PHONY: kube-binaries
kube-binaries: ## builds kube-apiserver, etcd, kubelet, ... from the Go module proxy (cached)
	hack/kube-binaries.sh $(KUBE_VERSION) >/dev/null

.PHONY: test-fast
test-fast: generate ## unit tests only: no API server, no broker (seconds)
	go test -short -count=1 ./...

.PHONY: test-integration
test-integration: generate kube-binaries ## unit + envtest (real kube-apiserver + etcd) + real RabbitMQ
	hack/with-rabbitmq.sh env KUBEBUILDER_ASSETS=$$(hack/kube-binaries.sh $(KUBE_VERSION)) MS2M_HELM=$$(hack/helm.sh) \
		go test -count=1 -p 1 -parallel 4 -timeout 40m ./...

.PHONY: test-rabbitmq310
test-rabbitmq310: ## the broker adapter and the SDK against RabbitMQ 3.10 (the lane that keeps 3.x working)
	MS2M_RABBITMQ_VERSION=3.10 hack/with-rabbitmq.sh go test -count=1 ./internal/broker/... ./sdk/...

PROPERTY_CASES ?= 1000
PROPERTY_SEED ?=
.PHONY: test-property
test-property: generate kube-binaries ## the exactly-once property suite alone (PROPERTY_CASES=5000 PROPERTY_SEED=...)
	hack/with-rabbitmq.sh env KUBEBUILDER_ASSETS=$$(hack/kube-binaries.sh $(KUBE_VERSION)) \
		MS2M_PROPERTY_CASES=$(PROPERTY_CASES) MS2M_PROPERTY_SEED=$(PROPERTY_SEED) \
		go test -count=1 -timeout 12h -parallel 4 -run TestExactlyOnceProperty ./internal/controller/

.PHONY: test
test: test-integration test-rabbitmq310 test-lab test-e2e test-e2e-containerd21 ## every layer: unit, envtest + RabbitMQ 4, the broker on RabbitMQ 3.10, lab, e2e on containerd 2.4 and 2.1 (the README's test command)

.PHONY: help
help:
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

##@ Lab (a real two-node Kubernetes on this machine; needs root)
LAB_SNAPSHOT ?= $(CACHE)/lab-host-before-up.json

.PHONY: ms2m lab-up lab-down lab-status lab-images test-lab
ms2m: ## the ms2m CLI (lab commands)
	go build -o $(BIN)/ms2m ./cmd/ms2m

lab-up: ms2m ## bring the lab up (first run builds Kubernetes, ~15 min); prints its env
	$(BIN)/ms2m lab up

lab-down: ms2m ## stop the lab and leave the host as it was
	$(BIN)/ms2m lab down

lab-status: ms2m ## health of the lab's parts and the capability report
	$(BIN)/ms2m lab status

lab-images: ms2m ## build and push the project's images to the lab registry
	$(BIN)/ms2m lab images

test-lab: ms2m ## up, lab tests, down, then check that down left nothing behind
	mkdir -p $(dir $(LAB_SNAPSHOT))
	$(BIN)/ms2m lab down
	$(BIN)/ms2m lab snapshot -o $(LAB_SNAPSHOT)
	$(BIN)/ms2m lab up
	rc=0; go test -tags lab -count=1 -p 1 -timeout 20m -v ./test/lab || rc=$$?; \
		$(BIN)/ms2m lab down || rc=1; \
		MS2M_LAB_SNAPSHOT=$(LAB_SNAPSHOT) go test -tags lab -count=1 ./test/lab/afterdown || rc=1; \
		exit $$rc

##@ End to end (in the lab; needs root)
.PHONY: test-e2e test-e2e-containerd21 test-faults demo
test-e2e: ms2m ## live migrations in the lab under a producer: up, e2e suite, down
	$(BIN)/ms2m lab up >/dev/null
	rc=0; go test -tags e2e -count=1 -p 1 -timeout 45m -v ./test/e2e || rc=$$?; \
		$(BIN)/ms2m lab down || rc=1; \
		exit $$rc

test-e2e-containerd21: ms2m ## the e2e suite on containerd 2.1.9 + runc 1.1.5 without ms2m's runtime handler: the restore path of checkpoint images still works
	$(BIN)/ms2m lab down >/dev/null
	$(BIN)/ms2m lab up --containerd 2.1 --no-runtime-handler >/dev/null
	rc=0; MS2M_FAULTS=off go test -tags e2e -count=1 -p 1 -timeout 45m -v ./test/e2e || rc=$$?; \
		$(BIN)/ms2m lab down || rc=1; \
		exit $$rc

FAULTS_REPORT ?= docs/faults/README.md
SOAK ?= 100
test-faults: ms2m ## the fault matrix (every fault in every phase) and a soak of $(SOAK) migrations in the lab; writes $(FAULTS_REPORT)
	$(BIN)/ms2m lab up >/dev/null
	mkdir -p $(dir $(FAULTS_REPORT))
	hack/faults-report-header.sh $(SOAK) > $(FAULTS_REPORT)
	rc=0; MS2M_FAULTS=full MS2M_SOAK=$(SOAK) MS2M_FAULTS_REPORT=$(abspath $(FAULTS_REPORT)) \
		go test -tags e2e -count=1 -p 1 -timeout 170m -v -run 'TestFaults|TestSoak' ./test/e2e || rc=$$?; \
		$(BIN)/ms2m lab down || rc=1; \
		exit $$rc

demo: ms2m ## the demo: lab up, ms2m deployed, a live consumer migrated node-a -> node-b, report
	$(BIN)/ms2m demo --workload Deployment

##@ Bench (in the lab; needs root)
BENCH_PRESET ?= quick
.PHONY: bench bench-go
bench-go: generate ## Go benchmarks of the hot paths (checkpoint image build/push, Direct transfer, SDK replay, broker topology) on a private RabbitMQ
	hack/with-rabbitmq.sh go test -run '^$$' -bench . -benchmem -count=$${COUNT:-1} ./internal/ckptimage ./internal/agent ./sdk ./internal/broker/rabbitmq

bench: ms2m ## every migration mode across rates and state sizes: CSV, report, plots in ~/.cache/ms2m/bench/PRESET; resumable (BENCH_PRESET=quick|full, BENCH_ARGS="--out DIR --reps 5 ...")
	$(BIN)/ms2m bench --preset $(BENCH_PRESET) $(BENCH_ARGS)
