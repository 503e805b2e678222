# lock-exec: the developer commands. Everything a target needs is installed by scripts/ (a virtualenv under .tmp/).
.PHONY: all build release static static-aarch64 test lint demo bench emulator-start emulator-stop clean

all: build

build:
	cargo build --locked

release:
	cargo build --locked --release

static:
	scripts/static.sh x86_64

static-aarch64:
	scripts/static.sh aarch64

test:
	scripts/test.sh

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings cargo doc --locked --no-deps

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

emulator-start:
	scripts/emulator.sh start moto

emulator-stop:
	scripts/emulator.sh stop moto

clean:
	cargo clean
	rm -rf .tmp
