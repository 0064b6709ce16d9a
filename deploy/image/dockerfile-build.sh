#!/bin/sh
# Builds the final stage of a Dockerfile with `docker build` from a root
# filesystem that rootfs.sh assembled on this machine: the image users with
# a registry get, minus the build stage (FROM scratch pulls nothing). For
# users without a registry who prefer `docker build` to build.sh's
# `docker import`; tests/e2e/images.rs builds both ways and compares them.
#
#   deploy/image/rootfs.sh /tmp/rootfs flotilla target/release/flotilla
#   deploy/image/dockerfile-build.sh /tmp/rootfs flotilla/flotilla:dev [deploy/Dockerfile]
#   deploy/image/dockerfile-build.sh /tmp/rootfs flotilla/nats-server:dev deploy/image/nats-server.Dockerfile
set -eu

[ $# -ge 2 ] || { echo "usage: dockerfile-build.sh ROOTFS TAG [DOCKERFILE]" >&2; exit 2; }
rootfs=$1 tag=$2
dockerfile=${3:-$(dirname "$0")/../Dockerfile}
[ -d "$rootfs" ] || { echo "dockerfile-build.sh: $rootfs is not a directory" >&2; exit 2; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# The context is laid out as the Dockerfiles expect: rootfs/ and, apart
# (so its own COPY --chown owns it), data/. cp -a keeps the modes (/tmp's
# 1777); COPY makes every file root's anyway.
cp -a "$rootfs" "$context/rootfs"
mv "$context/rootfs/data" "$context/data"
# The last stage, its copies of the build stage's /rootfs/ and /data taken
# from the context's rootfs/ and data instead. Any other copy from a stage
# is an error, not a silent difference.
awk '/^FROM /{stage=""} {stage=stage $0 "\n"} END{printf "%s", stage}' "$dockerfile" \
  | sed 's#^COPY --from=build \(.*\)/\(rootfs/\|data\) #COPY \1\2 #' > "$context/Dockerfile"
if grep -n -- '--from=' "$context/Dockerfile" >&2; then
  echo "dockerfile-build.sh: $dockerfile's last stage copies from a stage this script does not rewrite" >&2
  exit 1
fi
# The classic builder: it needs no BuildKit, and FROM scratch pulls nothing.
DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$context" >/dev/null
