#!/usr/bin/env bash
# Checks that every program gentoo@home runs is here and works: each is run once, and a
# missing or broken one is named with the Debian package that provides it. scripts/setup.sh
# calls this last, so a set-up that exits 0 has left nothing out; run it alone at any time.
set -uo pipefail
cd "$(dirname "$0")/.."

broken=()
# check NAME PACKAGE COMMAND...: COMMAND must exit 0.
check() {
  local name=$1 package=$2; shift 2
  local out
  if ! out=$("$@" 2>&1 </dev/null); then
    broken+=("$name (package $package): \`$*\` failed: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')")
  fi
}

# The vm backend (boinc-app/src/backend/vm.rs, accel.rs).
check qemu-system-x86_64 qemu-system-x86 qemu-system-x86_64 --version
check qemu-img qemu-utils qemu-img --version
check mkfs.ext4 e2fsprogs mkfs.ext4 -V
# The sandbox backend needs user namespaces and overlayfs (checked at run time by gah-app).
check unshare util-linux unshare --version
# The real BOINC client and its control tool (tests/harness), the API library (boinc-api).
check boinc boinc-client boinc --version
check boinccmd boinc-client boinccmd --version
check libboinc_api.so libboinc-app-dev sh -c 'ldconfig -p | grep -q "libboinc_api.so\b" && ldconfig -p | grep -q "libboinc.so\b"'
check boinc_api.h libboinc-app-dev test -f /usr/include/boinc/boinc_api.h
# Compilers: the workspace (bindgen needs libclang), the overlay's ebuilds on the host.
check cc build-essential cc --version
check gcc build-essential gcc --version
check g++ build-essential g++ --version
check clang clang clang --version
check libclang libclang-dev sh -c 'ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null'
check pkg-config pkg-config pkg-config --version
check cargo rustup cargo --version
check rustfmt "rustup component rustfmt" cargo fmt --version
check clippy "rustup component clippy" cargo clippy --version
# The guest image (vm-images/test-image/build.sh) and the distfiles.
check debootstrap debootstrap debootstrap --version
check busybox busybox-static test -x /bin/busybox
check cpio cpio cpio --version
check zstd zstd zstd --version
check tar tar tar --version
check socat socat socat -V
check sqlite3 sqlite3 sqlite3 --version
# Checking the overlay's ebuilds on the host.
check autoreconf autoconf autoreconf --version
check automake automake automake --version
check libtoolize libtool libtoolize --version
check runtest dejagnu runtest --version
check scanelf pax-utils scanelf --version
check python3 python3 python3 --version
# Portage from PyPI (scripts/setup.sh makes the venv).
venv=.cache/portage-venv
check "Portage (emerge)" "pip portage in $venv" "$venv/bin/python" -c 'import portage, _emerge'
check egencache "pip portage in $venv" test -x "$venv/bin/egencache"
check ebuild "pip portage in $venv" test -x "$venv/bin/ebuild"

if [ ${#broken[@]} -gt 0 ]; then
  echo "check-tools: these programs are missing or do not work:" >&2
  printf '  - %s\n' "${broken[@]}" >&2
  echo "check-tools: run scripts/setup.sh as root, or install the packages named above" >&2
  exit 1
fi
echo "check-tools: every program the project runs is here and works"
