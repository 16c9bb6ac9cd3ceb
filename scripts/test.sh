#!/usr/bin/env bash
# The project's one test command (the README names it; CI runs it through .ci/run).
#
# On a fresh Debian machine it first installs what the tests need (as root, with apt-get;
# otherwise it names the package and stops):
# - `redis-server` (with `redis-cli`): the tests spawn private servers, clusters and Sentinel
#   sets on free loopback ports in temporary directories; they never touch a shared Redis;
# - PostgreSQL's binaries (`initdb`, `postgres`, `psql`), unless DATABASE_URL names a
#   postgres:// server: the testkit makes a throwaway cluster and stops it (never the machine's).
# Then it runs the tests of the whole workspace with every feature, doc tests included;
# arguments are passed to `cargo test` (e.g. `scripts/test.sh -p dashcache -- cluster`).
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
