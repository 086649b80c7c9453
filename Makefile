# msb: a thin front for meson.  `make`, `make demo`, `make check`.
BUILD ?= build
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
MESON_OPTS ?=

.PHONY: all deps kernel demo check unit fuzz clean format

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)
	@$(MAKE) --no-print-directory kernel

# The guest kernel: built once per config (about 11 minutes on two cores),
# cached outside the build tree by scripts/build-kernel, linked in here.
kernel:
	@mkdir -p $(BUILD)/guest
	@k=$$(scripts/build-kernel) && ln -sfn "$$k" $(BUILD)/guest/bzImage && \
		ln -sfn "$${k%/bzImage}/vmlinux" $(BUILD)/guest/vmlinux

deps:
	@scripts/install-deps

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) $(MESON_OPTS)

demo: deps all
	scripts/demo $(BUILD)

unit: all
	meson test -C $(BUILD) --print-errorlogs

# Every test: unit + integration (meson test), then the fuzz targets for a
# short smoke run each, then one summary line.
check: deps all
	scripts/check $(BUILD) $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz: deps
	scripts/fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD)
