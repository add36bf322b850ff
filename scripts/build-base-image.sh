#!/usr/bin/env bash
# Build the offline base image: a Debian bookworm root with Python 3.11 made by
# debootstrap, imported into Docker. For machines that reach Debian's mirror but no
# image registry; pass the printed tag as the Dockerfiles' BASE_IMAGE
# (MLCHAIN_BASE_IMAGE=mlchain-base:bookworm mlchain images build).
#
#   bash scripts/build-base-image.sh [--force] [--tag NAME:TAG] [--mirror URL]
#
# Idempotent: an existing image with the tag is kept unless --force. Needs root
# (debootstrap) and a Docker engine that answers. Prints the tag on stdout.
set -euo pipefail

TAG="mlchain-base:bookworm"
SUITE="bookworm"
MIRROR=""
FORCE=0

say() { echo "build-base-image: $*" >&2; }

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --tag) TAG="$2"; shift ;;
    --mirror) MIRROR="$2"; shift ;;
    -h|--help) usage ;;
    *) say "unknown argument: $1"; usage ;;
  esac
  shift
done

# The Debian mirror apt already uses here (deb822 .sources or one-line .list), so the
# root is made from the same place as the host's own packages.
apt_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list)
  local f uri
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    uri=$(awk '
      /^[[:space:]]*#/ { next }
      /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/) { print $i; exit } }
      /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\/.*debian\/?$/) { print $i; exit } }
    ' "$f")
    if [ -n "$uri" ]; then echo "$uri"; return; fi
  done
  echo "http://deb.debian.org/debian"
}

main() {
  command -v docker >/dev/null || { say "docker is missing: run scripts/setup-docker.sh"; exit 1; }
  docker info >/dev/null 2>&1 || { say "no Docker engine answers: run scripts/setup-docker.sh"; exit 1; }
  if [ "$FORCE" -eq 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG exists (use --force to rebuild)"
    echo "$TAG"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  [ -n "$MIRROR" ] || MIRROR=$(apt_mirror)
  # Global, not local: the EXIT trap runs after main has returned.
  ROOT_DIR=$(mktemp -d /tmp/mlchain-base.XXXXXX)
  trap 'rm -rf "$ROOT_DIR" "$ROOT_DIR.log"' EXIT
  local root="$ROOT_DIR"
  say "debootstrap $SUITE from $MIRROR into $root (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" > "$root.log" 2>&1 || {
      say "debootstrap failed; last lines:"; tail -n 20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  # Nothing of the build host may leak into the image: apt lists and caches are
  # rebuilt by apt-get update anyway.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
  local source_ref
  source_ref="debootstrap --variant=minbase $SUITE $MIRROR"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/usr/bin/python3"]' \
    --change "LABEL org.opencontainers.image.title=mlchain-base org.opencontainers.image.description=\"Debian $SUITE with Python 3, made by $source_ref\"" \
    --message "$source_ref" - "$TAG" >/dev/null
  docker run --rm "$TAG" /usr/bin/python3 -c 'import sys, venv; print(sys.version.split()[0])' >&2
  say "built $TAG"
  echo "$TAG"
}

main
