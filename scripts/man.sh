#!/usr/bin/env bash
# Checks that man/lock-exec.1 renders without a warning (groff -man -ww) and through man -l; installs Debian's
# groff-base and man-db first when they are missing and we are root (as the other scripts install what they need).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/debian.sh
if ! command -v groff >/dev/null || ! command -v man >/dev/null; then
  debian_install "scripts/man.sh: groff and man are needed" groff-base man-db
fi
warnings=$(groff -man -Tutf8 -ww -z man/lock-exec.1 2>&1)
if [ -n "$warnings" ]; then
  echo "man/lock-exec.1: groff warnings:" >&2
  echo "$warnings" >&2
  exit 1
fi
rendered=$(MANWIDTH=80 man -l man/lock-exec.1 2>&1)
for section in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS ENVIRONMENT "EXIT STATUS" EXAMPLES "SEE ALSO"; do
  if ! grep -q "^$section\$" <<<"$rendered"; then
    echo "man/lock-exec.1: section $section missing from man -l's rendering" >&2
    exit 1
  fi
done
echo "man/lock-exec.1: renders without warnings"
