#!/usr/bin/env bash
# Builds the systemd Debian image the lab and Molecule hosts run, once per
# machine. No container registry is reachable, so the image comes from
# debootstrap. The tag carries a hash of this recipe: an image is reused only
# when it was built by this exact recipe, and it is tagged only after a
# complete build, so a half-built image is never picked up.
set -euo pipefail

suite="${BASE_IMAGE_SUITE:-bookworm}"
packages="systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,sudo,ca-certificates"
recipe_hash=$(printf '%s\n' "$suite" "$packages" "$(sed -n '/^# recipe-start/,/^# recipe-end/p' "$0")" \
  | sha256sum | cut -c1-12)
image="localhost/redis-celery-bundle/debian:${suite}-${recipe_hash}"

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

workdir=$(mktemp -d /var/tmp/bundle-rootfs.XXXXXX)
trap 'rm -rf "$workdir"' EXIT

# recipe-start
debootstrap --variant=minbase --include="$packages" "$suite" "$workdir/rootfs" \
  http://deb.debian.org/debian >"$workdir/debootstrap.log" 2>&1 \
  || { tail -n 20 "$workdir/debootstrap.log" >&2; exit 1; }
# Units that wait for hardware or consoles a container does not have.
for unit in getty.target systemd-remount-fs.service dev-hugepages.mount sys-fs-fuse-connections.mount; do
  ln -sf /dev/null "$workdir/rootfs/etc/systemd/system/$unit"
done
rm -f "$workdir/rootfs/etc/machine-id" && touch "$workdir/rootfs/etc/machine-id"
cat >"$workdir/rootfs/etc/apt/sources.list" <<SOURCES
deb http://deb.debian.org/debian $suite main
deb http://deb.debian.org/debian $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
# Empty apt's lists, and date them to the epoch: Ansible's apt module judges
# cache_valid_time by the lists directory's mtime, so a freshly emptied
# directory would look up to date and no host could find a package.
rm -rf "$workdir"/rootfs/var/lib/apt/lists/* "$workdir"/rootfs/var/cache/apt/*
touch -d @0 "$workdir/rootfs/var/lib/apt/lists"
# recipe-end

tar -C "$workdir/rootfs" -c . \
  | podman import -q --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
echo "$image"
# Images from older recipes are dead weight; one still used by a container stays.
podman images --format '{{.Repository}}:{{.Tag}}' | grep "^${image%%:*}:" | grep -vxF "$image" \
  | xargs -r podman rmi >/dev/null 2>&1 || true
