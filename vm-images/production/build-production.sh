#!/bin/bash
# build-production.sh OUTDIR — the production guest image of gentoo@home (a RECIPE: NOT RUN HERE).
#
# Gentoo stage3 (amd64, OpenRC) + Portage's real ::gentoo tree + a distribution kernel
# (sys-kernel/gentoo-kernel-bin) + the CernVM-FS client, packed into the same artefacts as the
# test image (docs/GUEST.md): rootfs/, rootfs.ext4, vmlinux, initramfs.cpio.gz, stamp.
# The development machines can't reach Gentoo's mirrors, so this script has never run; it is
# written against the Gentoo Handbook's and CernVM-FS's documented layouts. Every claim that
# could not be checked here is marked ASSUMPTION; see README.md beside it.
#
# Needs: a Linux x86-64 build host, root, network to distfiles.gentoo.org (stage3, binhost,
# snapshots), gpg, xz, e2fsprogs, busybox-static, cpio, python3, lz4/zstd (kernel.py).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
TEST=$TOP/vm-images/test-image            # shares kernel.py, mkinitramfs.sh, initramfs-init, gah-guest-init
OUT=${1:?usage: $0 OUTDIR}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)

MIRROR=${GENTOO_MIRROR:-https://distfiles.gentoo.org}
FLAVOUR=amd64-openrc                          # stage3-amd64-openrc-<TIMESTAMP>.tar.xz
PROFILE=default/linux/amd64/23.0              # the stage3's own profile (no desktop, no systemd)
BINHOST=$MIRROR/releases/amd64/binpackages/23.0/x86-64
# Gentoo Linux Release Engineering (Automated Weekly Release Key) <releng@gentoo.org>
RELENG_FPR=13EBBDBEDE7A12775DFDB1BABB572E0E2D182910
ROOTFS_SIZE=${GAH_ROOTFS_SIZE:-8G}            # sparse; written through a per-job qcow2 overlay

# CernVM-FS (ASSUMPTION: the project's repository name, stratum-1 URLs and key are placeholders
# until the project's stratum 0 exists; the layout is the client's documented one).
CVMFS_FQRN=${GAH_CVMFS_FQRN:-gentoo.gentoo-at-home.org}
CVMFS_DOMAIN=${CVMFS_FQRN#*.}
CVMFS_SERVER_URLS=${GAH_CVMFS_SERVER_URLS:-"http://s1-eu.gentoo-at-home.org/cvmfs/@fqrn@;http://s1-us.gentoo-at-home.org/cvmfs/@fqrn@"}
CVMFS_PUBKEY=${GAH_CVMFS_PUBKEY:-$HERE/keys/$CVMFS_DOMAIN.pub}   # the repository's master public key
CVMFS_QUOTA_MB=${GAH_CVMFS_QUOTA_MB:-4000}

log() { printf '[build-production %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'build-production: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ -f "$CVMFS_PUBKEY" ] || die "no CernVM-FS public key at $CVMFS_PUBKEY"

STAMP=$( { cd "$TOP" && find vm-images/production vm-images/test-image -type f ! -name '*.md' -print0 \
          | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)
[ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] && { log "up to date"; exit 0; }

W=$OUT/.work; R=$OUT/rootfs.new
umount_all() { for m in $(awk -v r="$R/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do umount -l "$m" || true; done; }
trap umount_all EXIT
umount_all; rm -rf "$W" "$R"; mkdir -p "$W" "$R"

# ---- 1. stage3, verified ------------------------------------------------------------
export GNUPGHOME=$W/gnupg; mkdir -m 700 "$GNUPGHOME"
# Gentoo publishes its keys through WKD; on Gentoo: /usr/share/openpgp-keys/gentoo-release.asc
gpg -q --auto-key-locate=clear,nodefault,wkd --locate-key releng@gentoo.org >/dev/null
gpg --with-colons --fingerprint releng@gentoo.org | grep -q "^fpr:::::::::$RELENG_FPR:" \
  || die "release key fingerprint mismatch"
AB=$MIRROR/releases/amd64/autobuilds
curl -fsSL "$AB/latest-stage3-$FLAVOUR.txt" -o "$W/latest.txt"
# The file is clear-signed; its payload lines are "<TIMESTAMP>/stage3-...tar.xz <size>".
gpg -q --verify "$W/latest.txt" 2>/dev/null || die "latest-stage3-$FLAVOUR.txt: bad signature"
REL=$(grep -E "^[0-9TZ]+/stage3-$FLAVOUR-[0-9TZ]+\.tar\.xz " "$W/latest.txt" | head -1 | cut -d' ' -f1)
[ -n "$REL" ] || die "no stage3 named in latest-stage3-$FLAVOUR.txt"
log "stage3: $REL"
curl -fsSL "$AB/$REL" -o "$W/stage3.tar.xz"
curl -fsSL "$AB/$REL.asc" -o "$W/stage3.tar.xz.asc"
gpg -q --verify "$W/stage3.tar.xz.asc" "$W/stage3.tar.xz" || die "stage3: bad signature"
# Handbook: keep xattrs (file capabilities) and numeric owners.
tar -xpf "$W/stage3.tar.xz" --xattrs-include='*.*' --numeric-owner -C "$R"

# ---- 2. chroot set-up (Handbook, "Installing the Gentoo base system") ---------------------
cp --dereference /etc/resolv.conf "$R/etc/"
mount --types proc /proc "$R/proc"
mount --rbind /sys "$R/sys"; mount --make-rslave "$R/sys"
mount --rbind /dev "$R/dev"; mount --make-rslave "$R/dev"
mount --bind /run "$R/run"; mount --make-slave "$R/run"
inroot() { chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

mkdir -p "$R/etc/portage/package.use" "$R/etc/portage/package.accept_keywords" "$R/etc/portage/binrepos.conf"
cat >>"$R/etc/portage/make.conf" <<EOF

# --- gentoo@home production guest (build-production.sh) ---
# binary packages from Gentoo's official binhost, signature-checked (getuto keyring)
FEATURES="\${FEATURES} getbinpkg binpkg-request-signature"
EMERGE_DEFAULT_OPTS="--jobs=2 --load-average=\$(nproc) --quiet-build=y"
ACCEPT_LICENSE="*"
BINPKG_FORMAT="gpkg"
EOF
# stage3s since 2024 ship this file; written here so the recipe does not depend on it
cat >"$R/etc/portage/binrepos.conf/gentoobinhost.conf" <<EOF
[gentoobinhost]
priority = 9999
sync-uri = $BINHOST
EOF
# The kernel is ours to boot: no dracut initramfs, no boot loader, no UKI.
cat >"$R/etc/portage/package.use/gah-kernel" <<'EOF'
sys-kernel/installkernel -dracut -grub -systemd-boot -uki -ukify
sys-kernel/gentoo-kernel-bin -initramfs -generic-uki
virtual/dist-kernel -initramfs
EOF
echo 'net-fs/cvmfs ~amd64' >"$R/etc/portage/package.accept_keywords/gah-cvmfs"   # ~amd64 only

log "::gentoo snapshot (emerge-webrsync verifies its signature)"
inroot emerge-webrsync -q
inroot eselect profile set "$PROFILE"
inroot emerge --quiet --oneshot --noreplace sys-apps/portage   # stage3's may be older than the tree wants

log "packages (binaries from the binhost where available)"
inroot emerge --quiet --noreplace --getbinpkg \
  sys-kernel/gentoo-kernel-bin \
  llvm-core/clang sys-devel/gcc dev-build/make dev-build/autoconf dev-build/automake dev-build/libtool \
  dev-util/dejagnu app-misc/pax-utils sys-devel/patch sys-apps/file \
  app-arch/bzip2 app-arch/xz-utils app-arch/zstd app-arch/tar \
  net-fs/cvmfs sys-fs/fuse:3 sys-apps/iproute2
# ASSUMPTION: llvm-core/clang is the category after Gentoo's 2024 move from sys-devel/clang,
# and dev-build/* holds make/autotools since the 2023 move from sys-devel/*.
inroot emerge --depclean --quiet || true

# ---- 3. CernVM-FS client configuration (documented layout of /etc/cvmfs) -------------------
# Load order of the client: default.conf, default.d/*.conf, default.local,
# domain.d/<domain>.conf, domain.d/<domain>.local, config.d/<fqrn>.conf, config.d/<fqrn>.local.
install -d "$R/etc/cvmfs/keys/$CVMFS_DOMAIN" "$R/etc/cvmfs/domain.d" "$R/etc/cvmfs/config.d" "$R/cvmfs/$CVMFS_FQRN"
install -m 0644 "$CVMFS_PUBKEY" "$R/etc/cvmfs/keys/$CVMFS_DOMAIN/$CVMFS_DOMAIN.pub"
cat >"$R/etc/cvmfs/default.local" <<EOF
# gentoo@home production guest
CVMFS_REPOSITORIES=$CVMFS_FQRN
# The VM's only network path is qemu's user network with restrict=on and two guestfwd
# endpoints served by the host's supervisor (README.md): 10.0.2.101:3128 forwards to the
# stratum-1 servers directly, 10.0.2.100:3128 to the proxy configured in the BOINC client
# (init_data.xml <proxy_info>). ';' separates fail-over groups: direct first, then BOINC's proxy.
# /etc/gah/guest-init.d/50-cvmfs.sh may override this from /gah/in/cvmfs-proxy.
CVMFS_HTTP_PROXY="http://10.0.2.101:3128;http://10.0.2.100:3128"
CVMFS_CACHE_BASE=/var/lib/cvmfs
CVMFS_QUOTA_LIMIT=$CVMFS_QUOTA_MB
CVMFS_TIMEOUT=10
CVMFS_TIMEOUT_DIRECT=10
CVMFS_MAX_RETRIES=3
CVMFS_USE_GEOAPI=no
CVMFS_CLIENT_PROFILE=
EOF
cat >"$R/etc/cvmfs/domain.d/$CVMFS_DOMAIN.conf" <<EOF
CVMFS_SERVER_URL="$CVMFS_SERVER_URLS"
CVMFS_KEYS_DIR=/etc/cvmfs/keys/$CVMFS_DOMAIN
EOF
# no autofs in the guest: gah-guest-init mounts the repository itself
echo "$CVMFS_FQRN /cvmfs/$CVMFS_FQRN cvmfs defaults,_netdev,nodev,noauto 0 0" >>"$R/etc/fstab"
inroot cvmfs_config setup nocfgmod nostart noautofs 2>/dev/null || true   # user cvmfs, fuse.conf

# ---- 4. the guest side of docs/GUEST.md ------------------------------------------------
install -m 0755 "$TEST/gah-guest-init" "$R/usr/local/sbin/gah-guest-init"
install -D -m 0644 "$HERE/50-cvmfs.sh" "$R/etc/gah/guest-init.d/50-cvmfs.sh"
mkdir -p "$R/gah/in" "$R/gah/out"
echo gah-guest >"$R/etc/hostname"
: >"$R/etc/resolv.conf"   # cvmfs talks to the proxies by address; no DNS in the guest

umount_all
rm -rf "$R"/var/cache/distfiles/* "$R"/var/cache/binpkgs/* "$R"/var/tmp/portage/* "$R"/var/log/portage/*

# ---- 5. kernel and initramfs (same tools as the test image) ----------------------------
KVER=$(ls "$R/lib/modules" | sort -V | tail -1)
BZ=$(ls "$R/boot/vmlinuz-$KVER" "$R/usr/src/linux-$KVER/arch/x86/boot/bzImage" 2>/dev/null | head -1)
[ -n "$BZ" ] || die "no kernel image for $KVER"
python3 "$TEST/kernel.py" vmlinux "$BZ" "$W/vmlinux"
# ASSUMPTION: the dist-kernel config (Fedora-derived) has CONFIG_PVH=y like Debian's; if not,
# boot the bzImage itself (qemu microvm loads it through its option ROM, ~3.5 s slower under TCG).
"$TEST/mkinitramfs.sh" "$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -1 || echo /bin/busybox)" \
  "$R/lib/modules/$KVER" "$W/initramfs.cpio.gz" virtio_mmio virtio_blk virtio_console virtio_net ext4 crc32c_generic

# ---- 6. ext4 and publish -----------------------------------------------------------------
truncate -s "$ROOTFS_SIZE" "$W/rootfs.ext4"
mkfs.ext4 -q -F -L gah-root -m 0 -E nodiscard -d "$R" "$W/rootfs.ext4"
rm -rf "$OUT/rootfs" "$OUT/stamp"
mv "$R" "$OUT/rootfs"
mv "$W/rootfs.ext4" "$W/vmlinux" "$W/initramfs.cpio.gz" "$OUT/"
echo "$REL $KVER" >"$OUT/release"
rm -rf "$W"
echo "$STAMP" >"$OUT/stamp"
log "done: $OUT"
