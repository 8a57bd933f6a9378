#!/usr/bin/env bash
# Everything gentoo@home needs on a fresh Debian bookworm machine, as root. Idempotent:
# each step is skipped when its result is already there (heavy artefacts are cached under
# .cache/, which git ignores).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== setup: %s\n' "$*"; }

packages=(
  build-essential pkg-config clang libclang-dev   # Rust -sys crates, bindgen
  libboinc-app-dev boinc-client                  # BOINC's API library; the real client for tests
  qemu-system-x86 qemu-utils                     # the vm backend
  debootstrap busybox-static e2fsprogs cpio zstd # the guest image
  python3 python3-venv                           # Portage (from PyPI) for the overlay's metadata
  autoconf automake libtool dejagnu pax-utils    # checking the overlay's ebuilds on the host
  socat sqlite3 ca-certificates
)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  apt-get update -qq
  # qemu-utils may already be a newer backport: don't fight it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install a Rust toolchain (rustup) and run this again" >&2
  exit 1
fi

step "building the workspace (release)"
cargo build --release --workspace --bins --quiet

if [ ! -x .cache/portage-venv/bin/egencache ]; then
  step "Portage from PyPI in .cache/portage-venv (the REQUIRED_USE oracle, overlay metadata)"
  python3 -m venv .cache/portage-venv
  .cache/portage-venv/bin/pip install --quiet "portage==3.0.83"
fi

step "distfiles (real upstream sources repacked from crates.io packages)"
bash vm-images/distfiles/make-distfiles.sh .cache/distfiles

step "guest image (cached in .cache/images/test, rebuilt when its recipe changes)"
bash vm-images/test-image/build.sh .cache/images/test

echo
echo "setup: done"
