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
# qemu's exec: migration URIs run `sh -c "cat > FILE"`.
check sh dash sh -c 'echo ok | cat >/dev/null'
# The sandbox backend: an unprivileged user namespace (what it needs under BOINC's own user;
# gah-app also probes this itself and falls back to the VM).
check "unprivileged user namespaces" "util-linux; sysctl kernel.unprivileged_userns_clone=1" \
  setpriv --reuid=65534 --regid=65534 --clear-groups unshare --user --map-root-user true
# The real BOINC client and its control tool (tests/harness), the API library (boinc-api).
check boinc boinc-client boinc --version
check boinccmd boinc-client boinccmd --version
check libboinc_api.so libboinc-app-dev sh -c 'ldconfig -p | grep -q "libboinc_api\.so (" && ldconfig -p | grep -q "libboinc\.so ("'
check boinc_api.h libboinc-app-dev test -f /usr/include/boinc/boinc_api.h
# Compilers: the workspace (bindgen needs libclang), the overlay's ebuilds on the host.
check cc build-essential cc --version
check gcc build-essential gcc --version
check g++ build-essential g++ --version
check clang clang clang --version
check libclang "libclang-dev (libclang1)" sh -c 'ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* 2>/dev/null | grep -q .'
check pkg-config pkg-config pkg-config --version
check cargo rustup cargo --version
check rustfmt "rustup component rustfmt" cargo fmt --version
check clippy "rustup component clippy" cargo clippy --version
# The guest image (vm-images/test-image/build.sh) and the distfiles.
check debootstrap debootstrap debootstrap --version
# gah serve's browser tests and load benchmark.
check chromium chromium timeout 120 chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking --dump-dom about:blank
check node nodejs node --version
check playwright-core "npm ci in tests/browser" test -f tests/browser/node_modules/playwright-core/package.json
check wrk wrk sh -c "wrk -v 2>&1 | grep -q ^wrk"
check "busybox (static)" busybox-static sh -c 'dpkg -s busybox-static >/dev/null && /bin/busybox true'
check cpio cpio cpio --version
check zstd zstd zstd --version
check tar tar tar --version
check gzip gzip gzip --version
check xz xz-utils xz --version
check lz4 lz4 lz4 --version
check sha256sum coreutils sha256sum --version
check md5sum coreutils md5sum --version
check chroot coreutils chroot --version
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
check egencache "pip portage in $venv" "$venv/bin/python" "$venv/bin/egencache" --help
check ebuild "pip portage in $venv" "$venv/bin/python" "$venv/bin/ebuild" --help

if [ ${#broken[@]} -gt 0 ]; then
  echo "check-tools: these programs are missing or do not work:" >&2
  printf '  - %s\n' "${broken[@]}" >&2
  echo "check-tools: run scripts/setup.sh as root, or install the packages named above" >&2
  exit 1
fi
echo "check-tools: every program the project runs is here and works"
