# lock-exec: the developer commands. Everything a target needs is installed by scripts/ (a virtualenv under .tmp/).
.PHONY: all build release static static-aarch64 hot-order test lint man install demo bench fuzz emulator-start emulator-stop clean

# `make install`: the release binary to $(PREFIX)/bin, the man page to $(PREFIX)/share/man/man1 (DESTDIR for
# staging).
PREFIX ?= /usr/local

all: build

build:
	cargo build --locked

release:
	cargo build --locked --release

# Static musl binaries: size, `file` and `ldd` lines; the aarch64 one is then run (under qemu-user here) for
# --version and a lock cycle against a local emulator.
static:
	scripts/static.sh x86_64

static-aarch64:
	scripts/static.sh aarch64
	scripts/static-check.sh aarch64

# Regenerates scripts/hot-symbols.txt, the functions a lock cycle runs, laid out first in the x86_64 static binary
# (under valgrind against dynalite; after dependency, toolchain or version changes).
hot-order:
	scripts/hot-order.sh

.PHONY: dist dist-verify image
# dist/lock-exec-VERSION-{x86_64,aarch64}-linux-musl.tar.gz and dist/SHA256SUMS, reproducible from a clean checkout;
# dist-verify builds them twice more from fresh clones and compares.
dist:
	scripts/dist.sh

dist-verify:
	scripts/dist.sh verify

image:
	scripts/image.sh

test:
	scripts/test.sh

lint: man
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings cargo doc --locked --no-deps

# man/lock-exec.1 renders with groff -man -ww and man -l, without a warning.
man:
	scripts/man.sh

install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 target/release/lock-exec $(DESTDIR)$(PREFIX)/bin/lock-exec
	install -m 644 man/lock-exec.1 $(DESTDIR)$(PREFIX)/share/man/man1/lock-exec.1

demo:
	scripts/demo.sh

# cargo fuzz (nightly toolchain, `cargo install cargo-fuzz`): each target of fuzz/ for FUZZ_SECONDS. Not part of test.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = duration cli credential_process_command profile dynamodb_response sts_response credentials_json
fuzz:
	cargo +nightly fuzz build
	for target in $(FUZZ_TARGETS); do \
		cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

bench:
	scripts/bench.sh

emulator-start:
	scripts/emulator.sh start moto

emulator-stop:
	scripts/emulator.sh stop moto

clean:
	cargo clean
	rm -rf .tmp
