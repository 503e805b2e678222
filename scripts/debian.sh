# Sourced by the scripts that need Debian packages: `. scripts/debian.sh` (from the repository's root).

# debian_install WHAT PACKAGE...: installs the packages as root where apt-get exists (on stderr); elsewhere says
# "WHAT (Debian: apt-get install PACKAGE...)" and exits 1.
debian_install() {
  local what=$1
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's $* ($what)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >&2
  else
    echo "$what (Debian: apt-get install $*)" >&2
    exit 1
  fi
}
