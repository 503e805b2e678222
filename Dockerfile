# lock-exec in an empty image: the static musl binary and nothing else (no shell, no C library, no CA bundle:
# the TLS roots are compiled in). Build it with `make image`, which first builds the binary with scripts/static.sh;
# by hand: `scripts/static.sh x86_64 && docker build -t lock-exec .` (.dockerignore sends only the binaries).
# For arm64: `scripts/static.sh aarch64 && docker build --platform linux/arm64 \
#   --build-arg LOCK_EXEC_BIN=target/aarch64-unknown-linux-musl/release/lock-exec -t lock-exec:arm64 .`
FROM scratch
ARG LOCK_EXEC_BIN=target/x86_64-unknown-linux-musl/release/lock-exec
COPY ${LOCK_EXEC_BIN} /lock-exec
# The group too: with no /etc/passwd in the image, `USER 65534` alone would run with group 0 (root's).
USER 65534:65534
ENTRYPOINT ["/lock-exec"]
