#!/usr/bin/env bash
# Makes a local base image (Debian bookworm + python3.11 + venv) with debootstrap and buildah,
# for building the dispatchd image where no image registry is reachable:
#
#   make base-image && make image BASE_IMAGE=localhost/dispatchd-base:bookworm
#
# Needs root (debootstrap), debootstrap and buildah (apt-get install debootstrap buildah).
set -euo pipefail
NAME=${BASE_NAME:-localhost/dispatchd-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BUILDAH=(buildah ${BUILDAH_OPTS:-})

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$rootfs" "$MIRROR"
# Shrink it the way slim images do: no apt lists, docs or locales are needed at run time.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

ctr=$("${BUILDAH[@]}" from scratch)
mnt=$("${BUILDAH[@]}" mount "$ctr")
cp -a "$rootfs"/. "$mnt"/
"${BUILDAH[@]}" umount "$ctr"
"${BUILDAH[@]}" config --cmd '["/usr/bin/python3"]' --env LANG=C.UTF-8 "$ctr"
"${BUILDAH[@]}" commit --rm "$ctr" "$NAME"
echo "base image: $NAME"
