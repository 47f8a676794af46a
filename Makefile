# fwatchdog: see README.md. Targets: all run test unit integration templates-test asan lint format
# format-check bench clean, and (mk/static.mk) static static-test image-test
SHELL := /bin/bash
CC ?= cc
BUILD ?= build
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
PKGS := libuv libcjson
DEB_PKGS := build-essential pkg-config libuv1-dev libcjson-dev check node-llhttp python3 python3-pytest python3-yaml nodejs procps util-linux curl wrk

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wstrict-prototypes -Wmissing-prototypes
OPT ?= -O2 -g
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE $(OPT) -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
	-Iwatchdog -Imodes -I$(LLHTTP_INC) -DWD_SHA=\"$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)\"
DEP_CFLAGS := -std=c11 $(OPT) -w -I$(LLHTTP_INC)
SAN :=
ifneq ($(filter asan,$(MAKECMDGOALS)),)
  BUILD := build/asan
  OPT := -O1 -g -fno-omit-frame-pointer
  SAN := -fsanitize=address,undefined -fno-sanitize-recover=all
endif
CFLAGS_ALL = $(CFLAGS_BASE) $(WARN) $(SAN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS_ALL = $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -luv -lcjson)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)

CORE_SRC := $(filter-out watchdog/main.c,$(wildcard watchdog/*.c)) $(wildcard modes/*.c)
CORE_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC))
LLHTTP_OBJ := $(BUILD)/dep/llhttp.o $(BUILD)/dep/api.o $(BUILD)/dep/http.o
UNIT_SRC := test/check_main.c $(wildcard test/unit/*.c)
UNIT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(UNIT_SRC))
BIN := $(BUILD)/fwatchdog

.PHONY: all deps run test unit integration templates-test asan lint format format-check bench clean

all: deps $(BIN)

# Install what is missing (as root), or say exactly what to install.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || exit 1; \
	  else echo "missing packages; run: sudo apt-get install -y$$missing"; exit 1; fi; \
	fi

$(BUILD)/dep/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@echo "CC $< (dependency)"
	@$(CC) $(DEP_CFLAGS) $(SAN) -c -o $@ $<

$(BUILD)/%.o: %.c $(wildcard watchdog/*.h modes/*.h test/*.h)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BIN): $(BUILD)/watchdog/main.o $(CORE_OBJ) $(LLHTTP_OBJ)
	$(CC) $(SAN) -o $@ $^ $(LDLIBS_ALL) $(LDFLAGS)

$(BUILD)/check_unit: $(UNIT_OBJ) $(CORE_OBJ) $(LLHTTP_OBJ)
	$(CC) $(SAN) -o $@ $^ $(CHECK_LIBS) $(LDLIBS_ALL)

$(BUILD)/rawspawn: bench/rawspawn.c
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -o $@ $<

run: all
	@echo "serving on :8080 with test/fixtures/hello.sh: try  curl -d hi localhost:8080"
	mode=streaming fprocess="sh test/fixtures/hello.sh" exec $(BIN)

# make test: unit suites (Check) then integration tests (the built binary beside real handlers).
test: all $(BUILD)/check_unit
	$(BUILD)/check_unit
	FWATCHDOG=$(abspath $(BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration
	FWATCHDOG=$(abspath $(BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider test/templates

# Every template's handler under the built watchdog, as its Dockerfile runs it (no container engine).
templates-test: all
	FWATCHDOG=$(abspath $(BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider test/templates

unit: all $(BUILD)/check_unit
	$(BUILD)/check_unit

integration: all
	FWATCHDOG=$(abspath $(BIN)) /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration

# `make asan test` builds into build/asan with ASan+UBSan and runs the same suites on it.
asan: all $(BUILD)/check_unit
	@echo "sanitizer build in $(BUILD)"

bench: all $(BUILD)/rawspawn
	FWATCHDOG=$(abspath $(BIN)) RAWSPAWN=$(abspath $(BUILD)/rawspawn) \
	  FWATCHDOG_STATIC=$(if $(wildcard build/fwatchdog-static),$(abspath build/fwatchdog-static)) \
	  bash bench/run.sh

lint:
	cppcheck --quiet --enable=warning,style,performance,portability --error-exitcode=1 \
	  --suppress=missingIncludeSystem --inline-suppr -D_GNU_SOURCE -Iwatchdog -Imodes watchdog modes
	clang-tidy --quiet -checks='-*,bugprone-*,clang-analyzer-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-bugprone-assignment-in-if-condition,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-security.insecureAPI.vfork,-clang-analyzer-unix.Vfork,-clang-analyzer-valist.Uninitialized' \
	  --warnings-as-errors='*' watchdog/*.c modes/*.c -- -std=c11 -D_GNU_SOURCE -Iwatchdog -Imodes -I$(LLHTTP_INC)

format:
	clang-format -i watchdog/*.[ch] modes/*.[ch] test/*.[ch] test/unit/*.c bench/*.c

format-check:
	clang-format --dry-run -Werror watchdog/*.[ch] modes/*.[ch] test/*.[ch] test/unit/*.c bench/*.c

clean:
	rm -rf build

# make static (the musl release binary) and make image-test: see mk/static.mk.
-include mk/static.mk
