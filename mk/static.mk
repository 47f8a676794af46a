# mk/static.mk: the static release binary and the container image test (included by Makefile).
#
#   make static        build/fwatchdog-static: musl, fully static, stripped, no run-time deps
#   make static-test   the integration and template suites against build/fwatchdog-static
#   make image-test    a FROM scratch image with the static binary, run and stopped for real
#                      (podman or docker; skipped with a message when neither can run one)
#
# Nothing third-party lives in the repository: libuv and cJSON are built from Debian's source
# packages (`apt-get source`, Debian's patches applied) under build/static/, libuv with its own
# CMake and musl-gcc, static only; llhttp's C files come from node-llhttp as in the normal build.
# musl-gcc sees only musl's headers, so build/static/include holds symlinks to the kernel's
# uapi headers (linux/, asm/, asm-generic/), searched last (-idirafter) so that musl always wins.

STATIC := build/static
STATIC_BIN := build/fwatchdog-static
STATIC_CC ?= musl-gcc
STATIC_OPT ?= -O2
STATIC_DEB_PKGS := build-essential musl-tools dpkg-dev cmake file node-llhttp
# Recursive: evaluated in the recipe, after static-deps has installed gcc on a fresh machine.
MULTIARCH = $(shell gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH)
STATIC_ABS := $(abspath $(STATIC))
STATIC_SECTIONS := -ffunction-sections -fdata-sections
STATIC_KINC := -idirafter $(STATIC_ABS)/include
# Ours: the normal flags less the optimisation level, -g and _FORTIFY_SOURCE (musl has none).
STATIC_CFLAGS = $(filter-out -O% -g -D_FORTIFY_SOURCE=%,$(CFLAGS_BASE)) $(STATIC_OPT) $(WARN) \
	$(STATIC_SECTIONS) -I$(STATIC)/prefix/include $(STATIC_KINC)
STATIC_DEP_CFLAGS = -std=c11 $(STATIC_OPT) -w $(STATIC_SECTIONS) -I$(LLHTTP_INC)
STATIC_OBJ := $(patsubst %.c,$(STATIC)/obj/%.o,watchdog/main.c $(CORE_SRC))
STATIC_DEP_OBJ := $(STATIC)/dep/llhttp.o $(STATIC)/dep/api.o $(STATIC)/dep/http.o \
	$(STATIC)/dep/cJSON.o
STATIC_LIBUV := $(STATIC)/prefix/lib/libuv.a

.PHONY: static static-deps static-test image-test

static: $(STATIC_BIN)

# Packages as `make deps` does; then a deb-src entry (a copy of the deb entries) for apt-get
# source, when there is none.
static-deps:
	@missing=""; for p in $(STATIC_DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || exit 1; \
	  else echo "missing packages; run: sudo apt-get install -y$$missing"; exit 1; fi; \
	fi
	@if ! grep -qsE '^[[:space:]]*(Types:.*deb-src|deb-src[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then \
	  d=/etc/apt/sources.list.d; \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "no deb-src entry for apt-get source; run:"; \
	    echo "  sudo sh -c \"sed 's/^Types:.*/Types: deb-src/' $$d/debian.sources > $$d/debian-src.sources && apt-get update\""; exit 1; \
	  elif [ -f $$d/debian.sources ]; then sed 's/^Types:.*/Types: deb-src/' $$d/debian.sources > $$d/debian-src.sources; \
	  elif [ -f /etc/apt/sources.list ]; then sed -n 's/^deb[[:space:]]/deb-src /p' /etc/apt/sources.list > $$d/debian-src.list; \
	  else echo "no apt source to copy into a deb-src entry"; exit 1; fi; \
	  echo "added a deb-src entry in $$d; apt-get update"; apt-get update -qq || exit 1; \
	fi

# apt-get source, unpacked (patches applied) into a fixed directory name. apt has checked every
# file against the signed Sources index; dpkg-source --no-check skips only its own second check,
# which wants debian-keyring and otherwise warns.
$(STATIC)/src/%/.unpacked: | static-deps
	@rm -rf $(STATIC)/dl/$* $(STATIC)/src/$* && mkdir -p $(STATIC)/dl/$* $(STATIC)/src
	@# As root, apt downloads as the user _apt: let it write there (else it warns and goes on).
	@if [ "$$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt $(STATIC)/dl/$*; fi
	cd $(STATIC)/dl/$* && apt-get source -qq --download-only $(if $(filter libuv,$*),libuv1,cjson)
	dpkg-source --no-check -x $(STATIC)/dl/$*/*.dsc $(STATIC)/src/$* >/dev/null
	@touch $@

$(STATIC)/include/.linked: | static-deps
	@test -d /usr/include/linux -a -d /usr/include/$(MULTIARCH)/asm || \
	  { echo "kernel headers missing: apt-get install linux-libc-dev"; exit 1; }
	@mkdir -p $(dir $@)
	ln -sfn /usr/include/linux $(STATIC)/include/linux
	ln -sfn /usr/include/asm-generic $(STATIC)/include/asm-generic
	ln -sfn /usr/include/$(MULTIARCH)/asm $(STATIC)/include/asm
	@touch $@

# libuv's own CMake, only the static library target (uv_a), warnings off (not our code);
# asserts kept, as in Debian's build (CMAKE_BUILD_TYPE=None).
$(STATIC_LIBUV): $(STATIC)/src/libuv/.unpacked $(STATIC)/include/.linked
	cmake -S $(STATIC)/src/libuv -B $(STATIC)/libuv-build -DCMAKE_C_COMPILER=$(STATIC_CC) \
	  -DCMAKE_BUILD_TYPE=None -DCMAKE_C_FLAGS="$(STATIC_OPT) -w $(STATIC_SECTIONS) $(STATIC_KINC)" \
	  -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF -DBUILD_TESTING=OFF >/dev/null
	cmake --build $(STATIC)/libuv-build --target uv_a -j2 >/dev/null
	@mkdir -p $(STATIC)/prefix/lib $(STATIC)/prefix/include
	cp -r $(STATIC)/src/libuv/include/. $(STATIC)/prefix/include/
	cp $$(ls $(STATIC)/libuv-build/libuv_a.a $(STATIC)/libuv-build/libuv.a 2>/dev/null | head -n1) $@

$(STATIC)/prefix/include/cjson/cJSON.h: $(STATIC)/src/cjson/.unpacked
	@mkdir -p $(dir $@)
	cp $(STATIC)/src/cjson/cJSON.h $@

$(STATIC)/dep/cJSON.o: $(STATIC)/src/cjson/.unpacked
	@mkdir -p $(dir $@)
	@echo "MUSL-CC cJSON.c (dependency)"
	@$(STATIC_CC) $(STATIC_DEP_CFLAGS) -c -o $@ $(STATIC)/src/cjson/cJSON.c

$(STATIC)/dep/%.o: $(LLHTTP_DIR)/%.c | static-deps
	@mkdir -p $(dir $@)
	@echo "MUSL-CC $< (dependency)"
	@$(STATIC_CC) $(STATIC_DEP_CFLAGS) -c -o $@ $<

$(STATIC)/obj/%.o: %.c $(wildcard watchdog/*.h modes/*.h) $(STATIC_LIBUV) \
		$(STATIC)/prefix/include/cjson/cJSON.h
	@mkdir -p $(dir $@)
	@echo "MUSL-CC $<"
	@$(STATIC_CC) $(STATIC_CFLAGS) -c -o $@ $<

$(STATIC_BIN): $(STATIC_OBJ) $(STATIC_DEP_OBJ) $(STATIC_LIBUV)
	$(STATIC_CC) -static -s -Wl,--gc-sections -o $@ $^
	@file $@ | grep -q 'statically linked' || { file $@; echo "$@ is not static"; rm -f $@; exit 1; }
	@echo "$@: $$(stat -c %s $@) bytes, static, stripped"

static-test: static
	FWATCHDOG=$(abspath $(STATIC_BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration
	FWATCHDOG=$(abspath $(STATIC_BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider test/templates

# A FROM scratch image with the static watchdog and a static C handler, run for real.
# Never part of `make test`: it needs a container engine that can run containers here.
# The handler: the c-classic template's when it exists, else test/image/handler.c.
IMAGE_HANDLER_SRC := $(firstword $(wildcard templates/c-classic/handler.c \
	templates/c-classic/function/handler.c) test/image/handler.c)

# The handler is compiled every time (well under a second): its source may change between runs.
image-test: $(STATIC_BIN) | static-deps
	$(STATIC_CC) -std=c11 -O2 -Wall -Wextra -static -s -o $(STATIC)/image-handler $(IMAGE_HANDLER_SRC)
	bash test/image/run.sh $(abspath $(STATIC_BIN)) $(abspath $(STATIC)/image-handler) $(IMAGE_HANDLER_SRC)
