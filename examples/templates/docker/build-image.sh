#!/usr/bin/env bash
# Builds the workspace image of the `docker` example template without any image
# registry: `debootstrap` a minimal Debian from the package mirror apt already uses,
# then `docker import` it. Needs root, debootstrap and a running dockerd.
#
#   ./build-image.sh [IMAGE]      default: coder-workspace:latest
#
# Cached twice, keyed by a hash of this script (what it installs and how):
# - the image carries the hash as a label; an image whose label matches is kept as is;
# - the root filesystem tarball is kept in ${XDG_CACHE_HOME:-~/.cache}/coder-dev/, so a
#   dockerd with an empty image store imports it again in seconds instead of
#   debootstrapping for minutes.
# Change what the image holds by editing this script: the hash changes with it.
#
# Environment: DEBIAN_MIRROR (default: the first Debian mirror in apt's sources),
# DEBIAN_SUITE (default: the host's codename, else bookworm).
set -euo pipefail

image="${1:-coder-workspace:latest}"
suite="${DEBIAN_SUITE:-$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)}"
suite="${suite:-bookworm}"
# What the workspace needs: a shell, git, curl (the agent's init script downloads
# the agent with it), ssh/scp, sudo, useradd (passwd), ps (procps). The user and
# its sudo rule are made by the template when the container starts, not here.
packages="bash,git,curl,ca-certificates,openssh-client,sudo,passwd,procps,less"
arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
label=org.coder.workspace-image.hash

hash="$( { cat "$0"; echo "$suite $arch"; } | sha256sum | cut -c1-16)"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/coder-dev"
tarball="$cache_dir/workspace-image-$suite-$arch-$hash.tar.gz"

current() {
    docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null || true
}

import() {
    docker import \
        --change "LABEL $label=$hash" \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$tarball" "$image" >/dev/null
    echo "imported $image from $tarball"
}

mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then
        echo "$DEBIAN_MIRROR"
        return
    fi
    # deb822 (`URIs:`) or one-line (`deb URL suite ...`) sources; the main archive,
    # not security or third-party repositories.
    local found
    found="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' |
        tr ' ' '\n' | grep -E '/debian/?$' | head -n1 || true)"
    echo "${found:-http://deb.debian.org/debian}"
}

command -v docker >/dev/null 2>&1 || { echo "build-image.sh: docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build-image.sh: dockerd is not running (or not reachable)" >&2; exit 1; }

mkdir -p "$cache_dir"
# One build at a time (parallel test runs share the cache).
exec 9>"$cache_dir/workspace-image.lock"
flock 9

if [ "$(current)" = "$hash" ]; then
    echo "$image is up to date ($hash)"
    exit 0
fi
if [ -s "$tarball" ]; then
    import
    exit 0
fi

[ "$(id -u)" = 0 ] || { echo "build-image.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null 2>&1 || { echo "build-image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

root="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
trap 'rm -rf "$root" "$tarball.part"' EXIT
src="$(mirror)"
echo "debootstrap $suite ($arch) from $src into $root"
start=$SECONDS
debootstrap --variant=minbase --arch="$arch" --include="$packages" "$suite" "$root" "$src" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
# Smaller and free of the host's traces: package lists and caches go; the image
# gets the container's own hostname and resolver from docker.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/*.log "$root"/tmp/* "$root"/etc/hostname
tar --numeric-owner -C "$root" -czf "$tarball.part" .
mv "$tarball.part" "$tarball"
echo "built $tarball in $((SECONDS - start)) s"
# Older tarballs of this suite and architecture are stale.
find "$cache_dir" -maxdepth 1 -name "workspace-image-$suite-$arch-*.tar.gz" ! -name "$(basename "$tarball")" -delete
import
