#!/usr/bin/env bash
# `make image`: builds the dispatchd image from the Dockerfile with docker (when its daemon
# answers) or else buildah (daemonless; chroot isolation, so it also runs inside a container).
#
#   IMAGE=dispatchd:dev  BASE_IMAGE=python:3.11-slim-bookworm  BUILDAH_OPTS="--storage-driver vfs"
#   BUILD_OPTS="..."   more options for `docker build` / `buildah bud` (e.g. -v, --build-arg)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-dispatchd:dev}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  # shellcheck disable=SC2086  # BUILD_OPTS is a list of options
  exec docker build ${BUILD_OPTS:-} --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" .
elif command -v buildah >/dev/null 2>&1; then
  # shellcheck disable=SC2086  # BUILDAH_OPTS is a list of options
  exec buildah ${BUILDAH_OPTS:-} bud --isolation chroot --layers ${BUILD_OPTS:-} \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" .
else
  echo "make image needs docker (with a running daemon) or buildah:" >&2
  echo "  apt-get install buildah   # daemonless, see docs/deploy.md" >&2
  exit 1
fi
