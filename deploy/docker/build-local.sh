#!/usr/bin/env bash
# Build the lr-sweeps image on a machine that reaches no image registry (no python:3.11-slim)
# nor PyTorch's wheel index, but has Debian's packages, PyPI and a torch wheel on disk:
#   deploy/docker/build-local.sh [TAG]        # TAG: lr-sweeps:latest by default
# The base, a Debian bookworm root filesystem from debootstrap with python3, is built once
# and kept as lr-sweeps-base:bookworm (a minute or more); later builds reuse it and
# Docker's layer cache. Environment:
#   WHEELS   the directory holding the torch wheel (default: pip's find-links, $PIP_FIND_LINKS)
#   MIRROR   the Debian mirror for debootstrap (default: the first one apt uses here)
#   BASE     the base image's tag (default: lr-sweeps-base:bookworm)
#   WHEELS_PORT  the loopback port the wheels are served on during the build (default 38417)
# The build runs on the host's network so that pip reaches the wheel server on loopback.
set -euo pipefail

tag=${1:-lr-sweeps:latest}
base=${BASE:-lr-sweeps-base:bookworm}
root=$(cd "$(dirname "$0")/../.." && pwd)

first_mirror() {  # where apt finds Debian's bookworm release here
    apt-get indextargets --format '$(REPO_URI) $(CODENAME)' 2> /dev/null \
        | awk '$2 == "bookworm" { print $1; exit }'
}

if ! docker image inspect "$base" > /dev/null 2>&1; then
    mirror=${MIRROR:-$(first_mirror)}
    [ -n "$mirror" ] || { echo "error: MIRROR: no Debian mirror found; set MIRROR" >&2; exit 2; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "building $base with debootstrap from $mirror" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
        || { tail -n 20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    # This machine's trust store, so that pip in the build trusts the certificates that pip
    # here trusts (a proxy's own CA included).
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" -c . \
        | docker import --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" - "$base" \
        > /dev/null
    rm -rf "$rootfs"
fi

wheels=${WHEELS:-${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}}
wheels=${wheels%% *}  # the first of several
ls "$wheels"/torch-*.whl > /dev/null 2>&1 \
    || { echo "error: WHEELS: no torch wheel in '$wheels'; set WHEELS to its directory" >&2; exit 2; }

# The wheel directory served on loopback, as pip's --find-links, for the build only. On a
# fixed port where it is free: the URL is a build argument, and a new one rebuilds torch's
# layer instead of taking it from the cache.
port=$(python3 - "${WHEELS_PORT:-38417}" <<'PY'
import socket, sys
with socket.socket() as s:
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
PY
)
python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" > /dev/null 2>&1 &
server=$!
trap 'kill "$server" 2> /dev/null || true' EXIT
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" \
    2> /dev/null; do sleep 0.2; done

# The legacy builder where BuildKit's client (buildx) is missing.
docker buildx version > /dev/null 2>&1 || export DOCKER_BUILDKIT=0
docker build --network host \
    --build-arg BASE_IMAGE="$base" \
    --build-arg TORCH_FIND_LINKS="http://127.0.0.1:$port/" \
    -t "$tag" "$root"
