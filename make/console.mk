# The TypeScript client package and the web console. Included by the root Makefile.
#
#   make ts-client        npm ci + build clients/typescript (@cortex-core/client): stubs from
#                         generated/ts, google.rpc error details, helpers; dist/ and dist-examples/
#   make ts-client-pack   the installable tarball build/cortex-core-client-<version>.tgz
#   make console-build    npm ci + vite build of console/ into console/dist
#   make console          build it, then serve console/dist (127.0.0.1:8081, Python's http.server)
#                         and Envoy (127.0.0.1:8080: the console and gRPC-Web on one origin)
#   make console-screenshots  the browser tests, writing their screenshots into docs/console/
#   make browser          Debian's Chromium for the browser tests, via apt-get when missing
#
# Stamps in build/stamps make repeated runs cheap.

TS_CLIENT := clients/typescript
CONSOLE := console
TS_CLIENT_SOURCES := $(shell find $(TS_CLIENT)/src $(TS_CLIENT)/examples $(TS_CLIENT)/test $(TS_CLIENT)/e2e $(TS_CLIENT)/scripts -type f \
                       -not -path '*/src/gen/*' 2>/dev/null | LC_ALL=C sort) \
                     $(TS_CLIENT)/package.json $(TS_CLIENT)/tsconfig.json $(TS_CLIENT)/tsconfig.examples.json
GENERATED_TS := $(shell find generated/ts -type f -not -path '*/node_modules/*' 2>/dev/null | LC_ALL=C sort)
CONSOLE_SOURCES := $(shell find $(CONSOLE)/src -type f 2>/dev/null | LC_ALL=C sort) \
                   $(CONSOLE)/index.html $(CONSOLE)/vite.config.ts $(CONSOLE)/tsconfig.json $(CONSOLE)/package.json
CHROMIUM ?= /usr/bin/chromium
CONSOLE_STATIC_ADDRESS := 127.0.0.1
CONSOLE_STATIC_PORT := 8081

.PHONY: ts-client ts-client-pack console-build console console-screenshots browser

$(PROTO_STAMPS)/ts-client-deps: $(TS_CLIENT)/package-lock.json
	npm ci --prefix $(TS_CLIENT) --no-audit --no-fund
	@mkdir -p $(@D) && touch $@

$(TS_CLIENT)/dist/index.js: $(PROTO_STAMPS)/ts-client-deps $(TS_CLIENT_SOURCES) $(GENERATED_TS)
	npm run --prefix $(TS_CLIENT) build
	@touch $@

ts-client: $(TS_CLIENT)/dist/index.js ## build the TypeScript client package (clients/typescript)

ts-client-pack: ts-client ## pack it: build/cortex-core-client-<version>.tgz, for npm install
	@mkdir -p build
	cd $(TS_CLIENT) && npm pack --pack-destination ../../build

$(PROTO_STAMPS)/console-deps: $(CONSOLE)/package-lock.json | $(TS_CLIENT)/dist/index.js
	npm ci --prefix $(CONSOLE) --no-audit --no-fund
	@mkdir -p $(@D) && touch $@

$(CONSOLE)/dist/index.html: $(PROTO_STAMPS)/console-deps $(CONSOLE_SOURCES) $(TS_CLIENT)/dist/index.js
	npm run --prefix $(CONSOLE) build
	@touch $@

console-build: $(CONSOLE)/dist/index.html ## build the web console into console/dist

console: console-build $(VENV)/.installed ## serve the console and gRPC-Web on http://127.0.0.1:8080 (server: make run)
	@echo "Console: http://127.0.0.1:8080/ (static files from $(CONSOLE)/dist on $(CONSOLE_STATIC_ADDRESS):$(CONSOLE_STATIC_PORT),"
	@echo "gRPC-Web through Envoy to the server on 127.0.0.1:50051: start it with 'make run' in another shell). Ctrl-C stops."
	@mkdir -p build; $(PY) -m http.server $(CONSOLE_STATIC_PORT) --bind $(CONSOLE_STATIC_ADDRESS) --directory $(CONSOLE)/dist \
	   >build/console-static.log 2>&1 & static=$$!; \
	trap 'kill $$static' EXIT INT TERM; \
	$(BIN)/envoy -c $(ENVOY_CONFIG) --log-level $(ENVOY_LOG_LEVEL)

browser: ## Debian's Chromium (headless browser tests), installed with apt-get when missing
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "Installing Chromium from Debian (for tests/e2e/test_console.py)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; \
	fi

console-screenshots: $(VENV)/.installed console-build browser ## run the browser tests, refreshing docs/console/*.png
	CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(BIN)/pytest tests/e2e/test_console.py -q
