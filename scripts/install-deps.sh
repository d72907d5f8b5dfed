#!/usr/bin/env bash
# Installs the Debian packages the build and the test suite need, only when
# some are missing. Runs as root here; uses sudo otherwise.
set -euo pipefail

packages=(
  build-essential cmake
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev libabsl-dev
  libsqlite3-dev libpq-dev zlib1g-dev
  libboost-dev  # Boost.Beast and Boost.Asio (header-only): the HTTP server
  libssl-dev  # optional TLS for the server (OpenSSL)
  libjemalloc-dev  # jemalloc, qm's allocator (cmake/malloc.cmake)
  prometheus  # promtool: the tests check the /metrics exposition with it
  postgresql  # the PostgreSQL store's tests start a server of their own
  tzdata  # budget periods follow IANA time zones (Abseil reads zoneinfo)
  clang-format
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The MCP SDK test runs Node.js and installs the SDK with npm. Asked for only
# when the commands are missing: a NodeSource nodejs brings its own npm and
# conflicts with Debian's npm package.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

# The dashboard's browser test drives Debian's Chromium (headless) with
# playwright-core from npm.
if [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
