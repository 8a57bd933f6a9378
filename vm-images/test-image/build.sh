#!/bin/bash
# Build the gentoo@home test guest image (docs/GUEST.md, "The image").
#
#   vm-images/test-image/build.sh [OUTDIR]      (default: .cache/images/test)
#
# OUTDIR gets rootfs/, rootfs.ext4, vmlinux, initramfs.cpio.gz, kernel-version and stamp.
# Runs as root on Debian bookworm; installs its own apt prerequisites. Exits early when
# OUTDIR/stamp matches the recipe (files under vm-images/test-image/ except *.md and
# boot-smoke.sh, which do not shape the image, plus
# vm-images/portage/etc-portage/). Set GAH_IMAGE_FORCE=1 to rebuild anyway.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
OUT=${1:-$TOP/.cache/images/test}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEBCACHE=${GAH_DEB_CACHE:-$TOP/.cache/images/debs}
# GAH_ETC_PORTAGE: another /etc/portage source, for testing this script only.
ETC_PORTAGE=${GAH_ETC_PORTAGE:-$TOP/vm-images/portage/etc-portage}

SUITE=bookworm
MIRROR=${GAH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PORTAGE_VERSION=3.0.83                 # Portage from PyPI, pinned
KERNEL_META=linux-image-cloud-amd64    # resolved to linux-image-<abi>-cloud-amd64 at build time
ROOTFS_SIZE=${GAH_ROOTFS_SIZE:-4G}     # sparse; the VM writes through a per-job qcow2 overlay
# Modules the initramfs loads (dependencies are added; built-in ones are skipped).
# microvm exposes virtio-mmio devices through ACPI only: virtio_mmio finds them there.
INITRD_MODULES="virtio_mmio virtio_blk virtio_console ext4 crc32c_generic"
PACKAGES=(
  python3 python3-venv
  gcc g++ clang make pkgconf
  pax-utils autoconf automake libtool m4 dejagnu patch file libunwind-dev
  bzip2 xz-utils zstd gzip gawk
  busybox
)

log() { printf '[build.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'build.sh: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, file ownership in the image)"

if [ ! -d "$ETC_PORTAGE" ] || [ -z "$(ls -A "$ETC_PORTAGE" 2>/dev/null)" ]; then
  die "$ETC_PORTAGE is missing or empty: the guest's /etc/portage is copied verbatim from there (vm-images/portage/ provides it)."
fi

hash_tree() {  # DIR [find filters...]: sha256 of relative paths + contents
  local d=$1; shift
  ( cd "$d" && find . \( -type f -o -type l \) "$@" -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum ) | sha256sum | cut -d' ' -f1
}
recipe_hash() {
  printf 'test-image %s\netc-portage %s\n' "$(hash_tree "$HERE" ! -name '*.md' ! -name 'boot-smoke.sh')" "$(hash_tree "$ETC_PORTAGE")" \
    | sha256sum | cut -d' ' -f1
}
STAMP=$(recipe_hash)
if [ "${GAH_IMAGE_FORCE:-0}" != 1 ] && [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] \
   && [ -d "$OUT/rootfs" ] && [ -f "$OUT/rootfs.ext4" ] && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio.gz" ]; then
  log "image in $OUT is up to date (stamp $STAMP)"
  exit 0
fi
T0=$(date +%s)

# ---- host prerequisites --------------------------------------------------------------
need=()
for pair in debootstrap:debootstrap mkfs.ext4:e2fsprogs busybox:busybox-static cpio:cpio \
            lz4:lz4 zstd:zstd xz:xz-utils gzip:gzip python3:python3 sha256sum:coreutils; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  if [ "$cmd" = busybox ]; then
    dpkg -s busybox-static >/dev/null 2>&1 || need+=("$pkg")
  else
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing host packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
BUSYBOX_STATIC=$(dpkg -L busybox-static | grep -E '/bin/busybox$' || true)
BUSYBOX_STATIC=${BUSYBOX_STATIC%%$'\n'*}
[ -x "$BUSYBOX_STATIC" ] || die "busybox-static's binary not found"

WORK=$OUT/.work
ROOTFS_NEW=$OUT/rootfs.new
cleanup() {  # unmount anything left mounted under the new tree (debootstrap's or ours)
  local m
  for m in $(awk -v r="$ROOTFS_NEW/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" || true
  done
  return 0
}
trap cleanup EXIT
cleanup
rm -rf "$WORK" "$ROOTFS_NEW"
mkdir -p "$WORK" "$DEBCACHE"

# ---- root file system ------------------------------------------------------------------
log "debootstrap --variant=minbase $SUITE (${#PACKAGES[@]} extra packages)"
inc=$(IFS=,; echo "${PACKAGES[*]}")
debootstrap --variant=minbase --include="$inc" --cache-dir="$DEBCACHE" \
  "$SUITE" "$ROOTFS_NEW" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
T1=$(date +%s)
log "debootstrap done in $((T1 - T0)) s"

inchroot() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
               ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} ${https_proxy:+https_proxy=$https_proxy} \
               ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} chroot "$ROOTFS_NEW" "$@"; }

log "Portage $PORTAGE_VERSION from PyPI into /opt/portage"
mount -t proc proc "$ROOTFS_NEW/proc"
cp -L /etc/resolv.conf "$ROOTFS_NEW/etc/resolv.conf"
pipcert=()   # the host's CA bundle (it may hold a local proxy's CA)
for CA in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$CA" ] && [ -f "$CA" ]; then cp -L "$CA" "$ROOTFS_NEW/tmp/host-ca.crt"; pipcert=(--cert /tmp/host-ca.crt); break; fi
done
inchroot python3 -m venv /opt/portage
inchroot /opt/portage/bin/pip install -q --no-cache-dir --disable-pip-version-check \
  "${pipcert[@]}" "portage==$PORTAGE_VERSION" \
  || die "pip install portage==$PORTAGE_VERSION failed"
umount "$ROOTFS_NEW/proc"
rm -f "$ROOTFS_NEW/tmp/host-ca.crt"
: >"$ROOTFS_NEW/etc/resolv.conf"   # no network in the guest

# Portage's programs onto PATH; emerge also reads the running root's config from the venv's
# etc/portage, which must be the real /etc/portage (field notes).
for f in "$ROOTFS_NEW"/opt/portage/bin/*; do
  b=${f##*/}
  case "$b" in python*|pip*|activate*|Activate*) continue ;; esac
  ln -sf "/opt/portage/bin/$b" "$ROOTFS_NEW/usr/local/bin/$b"
done
[ -x "$ROOTFS_NEW/opt/portage/bin/emerge" ] || die "no emerge in /opt/portage/bin"
mkdir -p "$ROOTFS_NEW/opt/portage/etc"
rm -rf "$ROOTFS_NEW/opt/portage/etc/portage"
ln -s /etc/portage "$ROOTFS_NEW/opt/portage/etc/portage"
ln -sf /usr/bin/tar "$ROOTFS_NEW/usr/local/bin/gtar"

log "/etc/portage from $ETC_PORTAGE"
rm -rf "$ROOTFS_NEW/etc/portage"
mkdir -p "$ROOTFS_NEW/etc/portage"
cp -a "$ETC_PORTAGE/." "$ROOTFS_NEW/etc/portage/"
chown -R 0:0 "$ROOTFS_NEW/etc/portage"

# Portage's users and directories (PORTAGE_USERNAME may be set to root by make.conf, but a
# portage user/group keeps the default settings working too).
grep -q '^portage:' "$ROOTFS_NEW/etc/group" || inchroot groupadd -r -g 250 portage
grep -q '^portage:' "$ROOTFS_NEW/etc/passwd" || \
  inchroot useradd -r -u 250 -g portage -d /var/lib/portage/home -s /bin/false portage
mkdir -p "$ROOTFS_NEW"/var/{db/pkg,cache/distfiles,cache/binpkgs,tmp/portage,log/portage,lib/portage/home,db/repos}

install -m 0755 "$HERE/gah-guest-init" "$ROOTFS_NEW/usr/local/sbin/gah-guest-init"
mkdir -p "$ROOTFS_NEW/gah/in" "$ROOTFS_NEW/gah/out"
echo gah-guest >"$ROOTFS_NEW/etc/hostname"
printf '127.0.0.1\tlocalhost gah-guest\n::1\tlocalhost ip6-localhost\n' >"$ROOTFS_NEW/etc/hosts"
printf '# the guest root is the only file system in fstab; gah-guest-init mounts the rest\n/dev/vda / ext4 rw 0 1\n' \
  >"$ROOTFS_NEW/etc/fstab"

# slim down: package caches, docs, man pages (keep copyright files)
inchroot apt-get clean
rm -rf "$ROOTFS_NEW"/var/lib/apt/lists/* "$ROOTFS_NEW"/var/cache/apt/*.bin \
       "$ROOTFS_NEW"/usr/share/man "$ROOTFS_NEW"/usr/share/info "$ROOTFS_NEW"/var/log/*.log
find "$ROOTFS_NEW/usr/share/doc" -type f ! -name copyright -delete 2>/dev/null || true
T2=$(date +%s)
log "root tree ready in $((T2 - T1)) s ($(du -sh "$ROOTFS_NEW" | cut -f1))"

# ---- kernel ----------------------------------------------------------------------------
log "kernel from $KERNEL_META"
kpkg() { apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-/ && !n {print $2; n=1}' || true; }
KPKG=$(kpkg)
if [ -z "$KPKG" ]; then apt-get update -qq; KPKG=$(kpkg); fi
[ -n "$KPKG" ] || die "cannot resolve $KERNEL_META"
KVER_PKG=$(apt-cache policy "$KPKG" | awk '/Candidate:/{print $2}' || true)
KDEB=$(ls "$DEBCACHE/${KPKG}_${KVER_PKG//:/%3a}_amd64.deb" 2>/dev/null || true)
if [ -z "$KDEB" ]; then
  ( cd "$DEBCACHE" && apt-get download "$KPKG" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true )
  KDEB=$(ls "$DEBCACHE/${KPKG}"_*_amd64.deb 2>/dev/null | tail -1 || true)
fi
[ -f "$KDEB" ] || die "download of $KPKG failed"
dpkg-deb -x "$KDEB" "$WORK/kernel"
KREL=${KPKG#linux-image-}
MODDIR=
for d in "$WORK/kernel/lib/modules/$KREL" "$WORK/kernel/usr/lib/modules/$KREL"; do [ -d "$d" ] && MODDIR=$d && break; done
[ -d "$MODDIR" ] || die "no modules for $KREL in $KDEB"
python3 "$HERE/kernel.py" vmlinux "$WORK/kernel/boot/vmlinuz-$KREL" "$WORK/vmlinux"

log "initramfs ($INITRD_MODULES)"
"$HERE/mkinitramfs.sh" "$BUSYBOX_STATIC" "$MODDIR" "$WORK/initramfs.cpio.gz" $INITRD_MODULES >"$WORK/initramfs.log"
T3=$(date +%s)
log "kernel $KREL and initramfs in $((T3 - T2)) s ($(cat "$WORK/initramfs.log"))"

# ---- ext4 image ----------------------------------------------------------------------
log "rootfs.ext4 ($ROOTFS_SIZE sparse)"
rm -f "$WORK/rootfs.ext4"
truncate -s "$ROOTFS_SIZE" "$WORK/rootfs.ext4"
mkfs.ext4 -q -F -L gah-root -m 0 -E nodiscard,lazy_itable_init=0 -d "$ROOTFS_NEW" "$WORK/rootfs.ext4" \
  || die "mkfs.ext4 -d failed"
T4=$(date +%s)
log "rootfs.ext4 in $((T4 - T3)) s"

# ---- publish -------------------------------------------------------------------------
rm -f "$OUT/stamp"
rm -rf "$OUT/rootfs"
mv "$ROOTFS_NEW" "$OUT/rootfs"
mv "$WORK/rootfs.ext4" "$OUT/rootfs.ext4"
mv "$WORK/vmlinux" "$OUT/vmlinux"
mv "$WORK/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz"
echo "$KPKG $KVER_PKG" >"$OUT/kernel-version"
rm -rf "$WORK"
echo "$STAMP" >"$OUT/stamp"
log "done in $(( $(date +%s) - T0 )) s: $OUT (rootfs.ext4 $(du -h "$OUT/rootfs.ext4" | cut -f1) allocated, vmlinux $(du -h "$OUT/vmlinux" | cut -f1), initramfs $(du -h "$OUT/initramfs.cpio.gz" | cut -f1))"
