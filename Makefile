# Eosin: the usual entry points. `make demo` and `make test` are the quick start.
SWIFT      ?= swift
BUILD_FLAGS ?= -c release
BIN        := .build/release/eosin
APT_PKGS   := libopenblas-dev libopenslide-dev libreadline-dev libjpeg-dev libpng-dev libtiff-dev zlib1g-dev pkg-config
OUT        ?= out

.PHONY: setup build test demo bench format lint clean

# Installs the system libraries when any is missing (Debian/Ubuntu; needs root or sudo).
setup:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "system libraries present"; fi

build: setup
	$(SWIFT) build $(BUILD_FLAGS)

test: setup
	$(SWIFT) test

# Runs the main job on the sample slide: slide info and a thumbnail with the tissue overlay.
demo: build
	@slide=$$($(BIN) sample) || exit 2; mkdir -p $(OUT); \
	echo "== eosin info $$slide"; $(BIN) info "$$slide" && \
	echo "== eosin thumbnail" && $(BIN) thumbnail "$$slide" --out $(OUT)/thumbnail.png --overlay-tissue

bench: build
	@slide=$$($(BIN) sample) || exit 2; $(BIN) bench slide "$$slide"

format:
	$(SWIFT) format -i -r Sources Tests Package.swift

lint:
	$(SWIFT) format lint -r Sources Tests

clean:
	rm -rf .build $(OUT)
