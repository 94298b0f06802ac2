# Contracts: tools, code generation and proto checks. Included by the root
# Makefile, which defines VENV, PY and the $(VENV)/.installed target.
#
#   make tools            Node tools (buf, protoc-gen-es, Connect) via npm ci --prefix tools;
#                         Go toolchain + protoc-gen-go(-grpc) via apt-get, only when missing
#   make generate         regenerate generated/, clients/python/src/cortex and docs/api from
#                         proto/ (scripts/generate.sh)
#   make check-generated  fail when any of them differs from a fresh generation
#   make go-vendor        link Debian's Go libraries as vendor/ of each Go module (offline)
#   make go-check         go build, vet and test of each Go module, offline (part of proto-check)
#   make buf-lint         buf lint (STANDARD + COMMENTS, no exceptions)
#   make buf-format       buf format --diff --exit-code on proto/
#   make buf-breaking     buf breaking (FILE) against $(BUF_AGAINST_REF), skipped when that ref has no protos
#   make proto-check      all of the above checks
#
# Stamps in build/stamps make repeated runs cheap; `make -B <target>` forces one.

BUF := tools/node_modules/.bin/buf
PROTO_STAMPS := build/stamps
PROTO_FILES := $(shell find proto -name '*.proto' 2>/dev/null | LC_ALL=C sort)
GENERATED_FILES := $(shell find generated clients/python/src/cortex docs/api -type f -not -path '*/node_modules/*' \
                     -not -path '*/__pycache__/*' -not -path '*/vendor/*' 2>/dev/null | LC_ALL=C sort)
GENERATOR_INPUTS := scripts/generate.sh scripts/api_reference.py docs/contracts.md
BUF_AGAINST_REF ?= main
GO_APT_PACKAGES := golang-go protoc-gen-go protoc-gen-go-grpc golang-github-golang-protobuf-1-5-dev \
                   golang-google-grpc-dev golang-google-genproto-dev
GO_LIBRARY_DIRS := /usr/share/gocode/src/google.golang.org/grpc \
                   /usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/status \
                   /usr/share/gocode/src/github.com/golang/protobuf/ptypes

.PHONY: tools node-tools go-tools go-vendor go-check node-links proto-deps generate check-generated \
        buf-lint buf-format buf-breaking proto-check

tools: node-tools go-tools ## buf, protoc-gen-es, Connect (npm ci) and the Go toolchain (apt, if missing)

node-tools: $(PROTO_STAMPS)/node-tools node-links

$(PROTO_STAMPS)/node-tools: tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund
	@mkdir -p $(@D) && touch $@

# Node resolves bare imports from the importing file's directory upwards, so the
# generated JS and the TS test client each get a (gitignored) link to tools/node_modules.
node-links:
	@mkdir -p generated/ts tests/clients/ts
	@test -L generated/ts/node_modules || ln -sfn ../../tools/node_modules generated/ts/node_modules
	@test -L tests/clients/ts/node_modules || ln -sfn ../../../tools/node_modules tests/clients/ts/node_modules

go-tools:
	@missing=""; \
	for cmd in go protoc-gen-go protoc-gen-go-grpc; do \
	  command -v $$cmd >/dev/null || missing="$$missing $$cmd"; \
	done; \
	for dir in $(GO_LIBRARY_DIRS); do test -d $$dir || missing="$$missing $$dir"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing the Go toolchain from Debian (missing:$$missing)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $(GO_APT_PACKAGES); \
	fi

# The Go modules (generated/go stubs, clients/go helpers and example, tests/clients/go)
# build offline against Debian's Go libraries, linked as each module's vendor/.
GO_MODULES := generated/go clients/go tests/clients/go
GO_OFFLINE := GOFLAGS=-mod=vendor GOPROXY=off GO111MODULE=on

go-vendor: | go-tools
	scripts/go_vendor.sh $(GO_MODULES)

go-check: $(PROTO_STAMPS)/go-check ## go build, go vet and go test of every Go module, offline

$(PROTO_STAMPS)/go-check: $(shell find $(GO_MODULES) -name '*.go' -o -name go.mod 2>/dev/null | grep -v /vendor/) \
                          scripts/go_vendor.sh | go-tools
	scripts/go_vendor.sh $(GO_MODULES)
	@for module in $(GO_MODULES); do \
	  (cd $$module && $(GO_OFFLINE) go build -o /dev/null ./... && $(GO_OFFLINE) go vet ./... && \
	   $(GO_OFFLINE) go test ./...) || exit 1; \
	  echo "go-check: $$module builds, vets and passes its tests"; \
	done
	@mkdir -p $(@D) && touch $@

proto-deps: $(PROTO_STAMPS)/proto-deps

$(PROTO_STAMPS)/proto-deps: $(VENV)/.installed scripts/generate.sh
	scripts/generate.sh --deps-only
	@mkdir -p $(@D) && touch $@

generate: $(PROTO_STAMPS)/generate node-links ## regenerate generated/, the Python stubs and docs/api from proto/

$(PROTO_STAMPS)/generate: $(PROTO_FILES) $(GENERATOR_INPUTS) tools/package-lock.json $(VENV)/.installed \
                          | node-tools go-tools
	PY=$(PY) scripts/generate.sh
	@mkdir -p $(@D) && touch $@ $(PROTO_STAMPS)/proto-deps

check-generated: $(PROTO_STAMPS)/check-generated ## fail when generated/ is stale

$(PROTO_STAMPS)/check-generated: $(PROTO_FILES) $(GENERATED_FILES) $(GENERATOR_INPUTS) \
                                 scripts/check_generated.sh tools/package-lock.json $(VENV)/.installed \
                                 | node-tools go-tools
	PY=$(PY) scripts/check_generated.sh
	@mkdir -p $(@D) && touch $@

buf-lint: $(PROTO_STAMPS)/buf-lint ## buf lint, STANDARD + COMMENTS

$(PROTO_STAMPS)/buf-lint: $(PROTO_FILES) buf.yaml $(PROTO_STAMPS)/proto-deps | node-tools
	$(BUF) lint
	@touch $@

buf-format: $(PROTO_STAMPS)/buf-format ## buf format check (no rewrite)

$(PROTO_STAMPS)/buf-format: $(PROTO_FILES) | node-tools
	$(BUF) format --diff --exit-code proto
	@mkdir -p $(@D) && touch $@

# buf cannot take the '.git#branch=...' input here: build/proto-deps is
# gitignored, so that checkout lacks the googleapis module. Instead the
# ref's buf.yaml and proto/ are exported, given the same deps, and the `proto`
# module alone is built into an image and compared with our `proto` module.
buf-breaking: $(PROTO_STAMPS)/buf-breaking ## buf breaking (FILE) against $(BUF_AGAINST_REF)

$(PROTO_STAMPS)/buf-breaking: $(PROTO_FILES) buf.yaml $(PROTO_STAMPS)/proto-deps \
                              $(wildcard .git/refs/heads/$(BUF_AGAINST_REF)) | node-tools
	@against="$$(mktemp -d)"; trap 'rm -rf "$$against"' EXIT; \
	if ! git rev-parse --verify --quiet "$(BUF_AGAINST_REF)^{commit}" >/dev/null; then \
	  echo "buf-breaking: no ref '$(BUF_AGAINST_REF)' yet; nothing to compare against"; \
	elif ! git cat-file -e "$(BUF_AGAINST_REF):buf.yaml" 2>/dev/null || \
	     ! git cat-file -e "$(BUF_AGAINST_REF):proto" 2>/dev/null; then \
	  echo "buf-breaking: '$(BUF_AGAINST_REF)' has no buf.yaml and proto/ yet; nothing to compare against"; \
	else \
	  git archive "$(BUF_AGAINST_REF)" buf.yaml proto | tar -x -C "$$against" && \
	  mkdir -p "$$against/build" && cp -R build/proto-deps "$$against/build/" && \
	  $(BUF) build "$$against/proto" -o "$$against/image.binpb" && \
	  $(BUF) breaking proto --against "$$against/image.binpb" && \
	  echo "buf-breaking: no breaking changes against $(BUF_AGAINST_REF)"; \
	fi
	@touch $@

proto-check: buf-lint buf-format buf-breaking check-generated go-check ## every contract check
