#!/usr/bin/env bash
# The test suite, from a fresh machine: virtual environment, Docker engine, the offline
# base image, the framework images (keras, keras2, sklearn), the browser and Groovy for the browser and Job DSL
# tests, then pytest. Other arguments go to pytest.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/unit -x   # a part
#   bash scripts/test.sh --strict        # a missing tool (Docker, Chromium, Groovy) fails its tests
#
# Strictness is decided here, once: --strict (or --no-strict), else CI set to a true value
# (1, true, yes, on; any case). The tests read the decision from MLCHAIN_TEST_STRICT
# (tests/strictness.py); without strictness they skip, and pytest lists the reasons (-rs, with failures and errors: -rfEs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { echo "test.sh: $*" >&2; }

strict=""
args=()
for arg in "$@"; do
  case "$arg" in
    --strict) strict=1 ;;
    --no-strict) strict=0 ;;
    *) args+=("$arg") ;;
  esac
done
if [ -z "$strict" ]; then
  case "$(echo "${CI:-}" | tr '[:upper:]' '[:lower:]' | tr -d '[:space:]')" in
    1|true|yes|on) strict=1 ;;
    *) strict=0 ;;
  esac
fi
export MLCHAIN_TEST_STRICT="$strict"
if [ "$strict" = 1 ]; then mode="strict: a missing tool fails its tests"; else mode="not strict: a missing tool skips its tests"; fi
say "$mode"

bash scripts/bootstrap.sh test

# Debian packages the tests use: the browser (dashboard test), Groovy (Job DSL test), Docker
# Compose (the stack's compose file) and PostgreSQL (the team state on it).
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v groovy >/dev/null 2>&1 || need+=(groovy)
command -v git >/dev/null 2>&1 || need+=(git)
{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; } || need+=(docker-compose)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    say "missing ${need[*]}: the tests that need them are skipped (they fail in strict mode)"
  fi
fi

# Docker: the engine, the offline base image (no registry reachable here) and the images.
if bash scripts/setup-docker.sh; then
  if [ -z "${MLCHAIN_BASE_IMAGE:-}" ]; then
    if docker image inspect python:3.11-slim >/dev/null 2>&1; then
      export MLCHAIN_BASE_IMAGE=python:3.11-slim
    else
      export MLCHAIN_BASE_IMAGE="$(bash scripts/build-base-image.sh)"
    fi
  fi
  if [ -z "${MLCHAIN_BUILD_CA_BUNDLE:-}" ] && [ -n "${PIP_CERT:-}" ] && [ -f "${PIP_CERT}" ]; then
    export MLCHAIN_BUILD_CA_BUNDLE="$PIP_CERT"
  fi
  say "building the framework images from $MLCHAIN_BASE_IMAGE"
  .venv/bin/mlchain images build
else
  say "no Docker engine: the docker tests are skipped (they fail in strict mode)"
fi

set +e
.venv/bin/python -m pytest -p no:cacheprovider -rfEs ${args[@]+"${args[@]}"}
code=$?
set -e
# pytest's 5 means "no tests collected": a real failure for CI's purposes too.
exit $code
