#!/usr/bin/env bash
# Builds the worker image with podman, without an image registry.
#
#   bash deploy/image.sh [TAG]     (default localhost/sandbox-worker:dev)
#
# The base is Debian bookworm made here with debootstrap from Debian's own
# mirrors and imported into podman (localhost/sandbox-base:bookworm), then
# deploy/Dockerfile is built on it (--build-arg BASE). Both are cached: the
# base is made once, and podman reuses the image's layers whose inputs have
# not changed (the browser layer depends on deploy/run.sh and the recorder's
# npm lockfile only). With a registry, `docker build -f deploy/Dockerfile .`
# does the same on the public debian:bookworm-slim.
#
# podman on hosts like CI's needs `--runtime runc` (crun fails on a mixed
# cgroup setup) and explicit rlimits (its defaults are refused); set
# SANDBOX_PODMAN_ARGS to override both.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tag="${1:-localhost/sandbox-worker:dev}"
base="localhost/sandbox-base:bookworm"
mirror="${SANDBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# rlimits no higher than this shell's own (a container may not raise them);
# nproc at most 32768, the most runc would set on the machine this was
# written on.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
limits="--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
read -r -a podman_args <<<"${SANDBOX_PODMAN_ARGS:---runtime runc $limits}"

say() { printf '[image.sh] %s\n' "$*" >&2; }

make_base() {
    podman image exists "$base" && return 0
    local dir
    dir="$(mktemp -d /var/tmp/sandbox-base.XXXXXX)"
    trap 'rm -rf "$dir"' RETURN
    say "debootstrap: bookworm (minbase) from $mirror"
    debootstrap --variant=minbase bookworm "$dir/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 \
        || { tail -20 "$dir/debootstrap.log" >&2; return 1; }
    # The same suites as a stock image: Chromium's updates come through
    # bookworm-security.
    rm -f "$dir/rootfs/etc/apt/sources.list"
    cat >"$dir/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$dir/rootfs/var/cache/apt/archives/"*.deb "$dir/rootfs/var/lib/apt/lists/"*
    say "podman import: $base"
    tar -C "$dir/rootfs" -c . | podman import - "$base" >/dev/null
}

bash deploy/run.sh apt podman debootstrap runc
make_base
# The host's own CAs (a TLS-intercepting egress proxy's) for the build's
# downloads; the Dockerfile trusts them during the build only.
rm -f deploy/build-ca/*.crt
for ca in "${SANDBOX_BUILD_CA_DIR:-/usr/local/share/ca-certificates}"/*.crt; do
    [ -f "$ca" ] && cp "$ca" deploy/build-ca/
done
say "podman build: $tag"
started=$(date +%s)
podman build "${podman_args[@]}" --build-arg "BASE=$base" -f deploy/Dockerfile -t "$tag" . >&2
say "built $tag in $(($(date +%s) - started)) s; $(podman image inspect "$tag" --format '{{.Size}}') bytes"
