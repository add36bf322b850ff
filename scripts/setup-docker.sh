#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io when the
# client or the daemon is missing, start dockerd in the background when `docker info`
# fails, and wait until it answers. Idempotent: a running engine is left alone.
#
#   bash scripts/setup-docker.sh            # log: $DOCKERD_LOG (default /tmp/mlchain-dockerd.log)
#
# Needs root for the install and for dockerd; CI runs as root.
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/mlchain-dockerd.log}"
WAIT_S="${DOCKERD_WAIT_S:-60}"

say() { echo "setup-docker: $*" >&2; }

answers() { docker info >/dev/null 2>&1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_docker() {
  say "installing docker.io from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
}

start_dockerd() {
  # A pid file left by a daemon that died would make the new one refuse to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    as_root rm -f /var/run/docker.pid
  fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    say "starting docker with systemctl"
    as_root systemctl start docker || true
    return
  fi
  say "starting dockerd in the background (log: $LOG)"
  # setsid: the daemon must outlive this script and its caller's process group.
  as_root setsid dockerd >"$LOG" 2>&1 < /dev/null &
}

wait_until_answers() {
  local waited=0
  until answers; do
    if [ "$waited" -ge "$WAIT_S" ]; then
      say "dockerd did not answer within ${WAIT_S}s; last lines of $LOG:"
      tail -n 20 "$LOG" >&2 || true
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# The engine answers but its default bridge interface is gone (deleted by hand, or by another
# daemon's experiments): builds and bridge containers then fail with "could not find bridge".
# Recreate it with the engine's own subnet instead of restarting the engine (which would kill
# running training containers).
repair_bridge() {
  command -v ip >/dev/null 2>&1 || return 0
  local name subnet gateway
  name=$(docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null) || return 0
  [ -n "$name" ] || return 0
  ip link show "$name" >/dev/null 2>&1 && return 0
  subnet=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Subnet}}')
  gateway=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}')
  if [ -z "$gateway" ] || [ "$gateway" = "<no value>" ]; then
    gateway="${subnet%.*/*}.1"   # first host of the subnet, as dockerd picks it
  fi
  say "bridge $name is missing; recreating it ($gateway/${subnet#*/})"
  as_root ip link add "$name" type bridge
  as_root ip addr add "$gateway/${subnet#*/}" dev "$name"
  as_root ip link set "$name" up
}

main() {
  if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    install_docker
  fi
  if answers; then
    say "engine already answers"
  else
    # DOCKER_HOST pointing elsewhere means someone else's engine: do not start ours.
    if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix://* ]]; then
      say "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local dockerd"
      exit 1
    fi
    start_dockerd
    wait_until_answers
  fi
  repair_bridge
  docker version --format 'setup-docker: engine {{.Server.Version}} (API {{.Server.APIVersion}})' >&2
}

main "$@"
