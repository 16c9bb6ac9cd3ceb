#!/usr/bin/env bash
# The project's one test command (the README names it; CI runs it through .ci/run).
#
# On a fresh Debian machine it first brings up what the tests need: `redis-server` (the tests
# spawn private servers on free loopback ports; they never use a shared Redis). Then it runs the
# tests of the whole workspace, doc tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_bin="${REDIS_SERVER_BIN:-redis-server}"
if ! command -v "$redis_bin" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing redis-server with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  else
    echo "scripts/test.sh: redis-server is missing; install it (sudo apt-get install redis-server) or set REDIS_SERVER_BIN, then run scripts/test.sh again" >&2
    exit 1
  fi
fi

echo "scripts/test.sh: $("$redis_bin" --version)" >&2
cargo test --workspace --all-features --locked "$@"
