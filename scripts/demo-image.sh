#!/usr/bin/env bash
# Builds coderun's demo runtime image without any registry access: FROM scratch
# with Debian's statically linked busybox and its applet symlinks, /tmp and a
# /workspace the unprivileged run user (65534, "nobody") can write to. Prints
# the image ID on stdout. Rebuilding unchanged content hits the build cache.
#
#   scripts/demo-image.sh [TAG]   (TAG defaults to coderun-demo/busybox:1)
set -euo pipefail

source "$(dirname "$0")/apt.sh"

log() { echo "demo-image.sh: $*" >&2; }

tag=${1:-coderun-demo/busybox:1}
busybox=/bin/busybox

# Only busybox-static's /bin/busybox runs in an image with no libc.
if [[ $(dpkg-query -W -f '${Status}' busybox-static 2>/dev/null) != "install ok installed" ]]; then
	log "installing busybox-static"
	apt_install busybox-static
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/coderun-demo-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs

mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp} "$context/workspace"
cp "$busybox" "$rootfs/bin/busybox"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"

cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
# Inside the image busybox links its applets to itself where it is, /bin/busybox
# (on the host it would resolve to /usr/bin/busybox).
RUN ["/bin/busybox", "--install", "-s"]
COPY --chown=65534:65534 workspace/ /workspace/
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /workspace
USER 65534:65534
CMD ["/bin/sh"]
DOCKERFILE

log "building $tag from $busybox"
# The legacy builder: Debian's engine has no BuildKit front end for this client.
DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$context" >/dev/null
id=$(docker image inspect --format '{{.Id}}' "$tag")
log "built $tag ($id)"
echo "$id"
