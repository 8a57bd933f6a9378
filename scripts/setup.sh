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
  debootstrap busybox-static e2fsprogs cpio zstd # the guest image
  python3 python3-venv                           # Portage (from PyPI) for the overlay's metadata
  autoconf automake libtool dejagnu pax-utils    # checking the overlay's ebuilds on the host
  socat sqlite3 ca-certificates util-linux
  chromium wrk                                   # gah serve's browser tests; its load benchmark
)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done

# The vm backend: qemu-system-x86 and qemu-utils from one Debian release. A machine may carry
# a newer qemu-utils backport that Breaks Debian's qemu-system-common; left to itself apt then
# removes it and installs nothing in its place (no qemu-img). So both are pinned to the
# newest version the release itself offers (its main, -updates and -security suites, never
# backports), downgrading the backport if need be.
installed_version() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | sed -n 's/^install ok installed //p'; }
qemu_pins=()
if [ -z "$(installed_version qemu-system-x86)" ] || [ "$(installed_version qemu-utils)" != "$(installed_version qemu-system-common)" ]; then
  apt-get update -qq   # the version must be one the archive still serves
  qemu_version=$(apt-cache madison qemu-system-x86 | grep -v -- '-backports' | awk -F' [|] ' 'NR==1 {print $2}')
  [ -n "$qemu_version" ] || { echo "setup: no qemu-system-x86 in the apt sources" >&2; exit 1; }
  qemu_pins=("qemu-system-x86=$qemu_version" "qemu-system-common=$qemu_version" "qemu-utils=$qemu_version")
fi

if [ ${#missing[@]} -gt 0 ] || [ ${#qemu_pins[@]} -gt 0 ]; then
  step "installing ${missing[*]} ${qemu_pins[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "${missing[@]}" "${qemu_pins[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install a Rust toolchain (rustup) and run this again" >&2
  exit 1
fi
# The habits the test suite checks first (scripts/test.sh): rustfmt and clippy.
if command -v rustup >/dev/null && ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  step "adding the rustfmt and clippy components"
  rustup component add rustfmt clippy
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

# Playwright drives Debian's chromium in the browser tests (tests/browser); the exact version is
# package-lock.json's. Node.js and npm: the machine's own where it has them, else Debian's.
if ! command -v npm >/dev/null; then
  step "installing nodejs and npm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  step "playwright-core for the browser tests (npm ci in tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

step "checking that every program the project runs is here and works"
bash scripts/check-tools.sh

echo
echo "setup: done"
