#!/usr/bin/env bash
# The x86_64 static build's linker (scripts/static.sh): runs the C compiler driver with every argument rustc gave
# it, plus lld's --symbol-ordering-file naming the functions in scripts/hot-symbols.txt as this build spells them.
#
# LLVM gives a local symbol that shares its name with another a numeric suffix (`...alloc_impl_runtime.988`), and
# the numbers shift with nearly any change to the code. scripts/hot-symbols.txt lists names without them; this
# script finds each name's suffixed forms among the objects being linked (nm), so the hot code stays together
# after later commits instead of scattering one function at a time (peak RSS crept from 1.34 to 1.66 MiB that
# way). A name with several suffixed forms brings all of them: the copies are small, and which one ran is not
# known without a profile of this very build.
#
# LOCK_EXEC_LINK_CC: the driver to run (default cc; scripts/static.sh passes a linker the caller set in
# CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER); LOCK_EXEC_HOT_SYMBOLS: the list (default the one beside this
# script).
set -euo pipefail
hot=${LOCK_EXEC_HOT_SYMBOLS:-$(cd "$(dirname "$0")" && pwd)/hot-symbols.txt}
# The arguments, with those of a response file (@FILE, which rustc uses for a long command line: one argument per
# line, backslash-escaped) read in.
args=()
for arg in "$@"; do
  if [[ $arg == @* && -f ${arg#@} ]]; then
    while IFS= read -r line || [ -n "$line" ]; do
      args+=("$(printf '%s' "$line" | sed 's/\\\(.\)/\1/g')")
    done <"${arg#@}"
  else
    args+=("$arg")
  fi
done
# The scratch files go beside the output (-o FILE), which the link must be able to write anyway; TMPDIR may not
# exist in a build sandbox.
out=a.out
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    -o) out=${args[i + 1]:-a.out} ;;
  esac
done
order=$(mktemp "$(dirname "$out")/.lock-exec-order.XXXXXX")
names=$(mktemp "$(dirname "$out")/.lock-exec-names.XXXXXX")
trap 'rm -f "$order" "$names"' EXIT
objects=()
for arg in "${args[@]}"; do
  case "$arg" in
    *.o | *.rlib) [ -f "$arg" ] && objects+=("$arg") ;;
  esac
done
# nm -P prints "NAME TYPE VALUE SIZE" per symbol (an archive member's header line has two fields): text symbols.
if [ ${#objects[@]} -gt 0 ]; then
  nm -P --defined-only "${objects[@]}" | awk 'NF >= 3 && $2 ~ /^[tTwW]$/ { print $1 }' >"$names"
fi
# Each hot name in its order, followed by the suffixed forms (NAME.N) the objects define.
awk 'NR == FNR { hot[++n] = $0; wanted[$0] = 1; next }
  {
    base = $0
    if (sub(/\.[0-9]+$/, "", base) && (base in wanted) && !($0 in taken)) {
      taken[$0] = 1
      forms[base] = forms[base] "\n" $0
    }
  }
  END { for (i = 1; i <= n; i++) { print hot[i]; if (hot[i] in forms) print substr(forms[hot[i]], 2) } }' \
  "$hot" "$names" >"$order"
"${LOCK_EXEC_LINK_CC:-cc}" "$@" "-Wl,--symbol-ordering-file=$order" -Wl,--no-warn-symbol-ordering
