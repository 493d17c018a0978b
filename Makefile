# varsel: plain Makefile. `make` builds everything into build/.
#   make SANITIZER=address,undefined   build with ASan/UBSan
#   make test                          unit + integration tests (CI tier)
#   make check                         same as test
CC       ?= gcc
SANITIZER ?=
OPT      ?= -O2
BUILD    ?= build

PKGS     := libuv libnghttp2 openssl hiredis libcjson inih libxxhash
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser

WARN     := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes \
            -Wshadow -Wformat=2 -Wundef -Wno-unused-parameter
CFLAGS   ?= $(OPT) -g
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
CFLAGS   += -std=gnu11 $(WARN) -I. $(PKG_CFLAGS) -D_GNU_SOURCE -MMD -MP
LDLIBS   += $(PKG_LIBS) -lm
ifneq ($(SANITIZER),)
CFLAGS   += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZER)
endif

# Every .c in a subsystem folder goes into the library, except program mains.
LIB_DIRS  := common config queue apns fcm http2 daemon
LIB_SRC   := $(filter-out daemon/main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
SBX_SRC   := $(filter-out sandbox/main.c,$(wildcard sandbox/*.c))
CTL_SRC   := $(wildcard tools/*.c)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)

LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
SBX_OBJ   := $(SBX_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_BIN  := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)

PROGS := $(BUILD)/varseld $(BUILD)/varsel-sandbox
ifneq ($(CTL_SRC),)
PROGS += $(BUILD)/varselctl
endif

.PHONY: all clean test check unit integration fuzz test-long
.SECONDARY:
all: $(PROGS) $(UNIT_BIN)

$(BUILD)/libvarsel.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^
$(BUILD)/libsandbox.a: $(SBX_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^ $(if $(SBX_OBJ),,)

$(BUILD)/varseld: $(BUILD)/daemon/main.o $(BUILD)/libvarsel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/varsel-sandbox: $(BUILD)/sandbox/main.o $(BUILD)/libsandbox.a $(BUILD)/libvarsel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/varselctl: $(CTL_SRC:%.c=$(BUILD)/%.o) $(BUILD)/libvarsel.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libsandbox.a $(BUILD)/libvarsel.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# libFuzzer targets: make fuzz CC=clang BUILD=build-fuzz \
#     SANITIZER=fuzzer-no-link,address,undefined   (scripts/fuzz.sh does this)
$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/%.o $(BUILD)/libvarsel.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)
fuzz: $(FUZZ_BIN)

$(BUILD)/daemon/main.o: CFLAGS += -DVARSEL_VERSION='"$(VERSION)"'

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)
integration: $(PROGS)
	@python3 tests/integration/run.py --build $(BUILD)
test check: all
	@scripts/run-tests.sh $(BUILD)
# Long tier, run by hand: full-size chaos, backlog, valgrind, long fuzzing.
test-long:
	@scripts/run-tests.sh --long

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
