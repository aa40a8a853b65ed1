#!/bin/sh
# Set up everything burrow's demo and tests need on a fresh Debian machine:
#   1. as root, the Debian packages the features and the test oracles use (only missing ones);
#   2. a .venv with burrow installed editable, with its dev and optional dependencies.
# Safe to run again: each step is skipped when already done.
set -eu
cd "$(dirname "$0")/.."

PKGS="python3 python3-venv python3-dev gcc pkg-config fuse3 libfuse3-dev e2fsprogs fuse2fs
dosfstools mtools gdisk fdisk parted qemu-utils libnbd-bin python3-libnbd nbdkit
nbdkit-plugin-python fio attr xfsprogs util-linux iproute2 openssh-client openssh-server sshfs
kmod rsync git openssl"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in $PKGS; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
            missing="$missing $p"
        fi
    done
    if [ -n "$missing" ]; then
        echo "setup: installing Debian packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
elif ! command -v mkfs.ext4 >/dev/null 2>&1; then
    echo "setup: not root; install these Debian packages for the full test suite: $PKGS" >&2
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
STAMP=.venv/.burrow-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev,all,fuzz]'
    touch "$STAMP"
fi
