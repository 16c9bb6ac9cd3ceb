#!/usr/bin/env bash
# The project's one test command (the README names it; CI runs it through .ci/run).
#
# On a fresh Debian machine it first brings up what the tests need: `redis-server` (the tests
# spawn private servers on free loopback ports; they never use a shared Redis). Then it runs the
# tests of the whole workspace, doc tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian packages when running as root; otherwise says what is missing and stops.
missing=()
install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing $* with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "scripts/test.sh: missing $*; install it (sudo apt-get install $*), then run scripts/test.sh again" >&2
    exit 1
  fi
}

redis_bin="${REDIS_SERVER_BIN:-redis-server}"
command -v "$redis_bin" >/dev/null 2>&1 || missing+=(redis-server)
# PostgreSQL tests use DATABASE_URL when it names a postgres:// server; otherwise the testkit
# makes a throwaway cluster with initdb (Debian keeps it under /usr/lib/postgresql/*/bin).
if [[ "${DATABASE_URL:-}" != postgres* ]] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  install "${missing[@]}"
fi

echo "scripts/test.sh: $("$redis_bin" --version)" >&2
cargo test --workspace --all-features --locked "$@"
