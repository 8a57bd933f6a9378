#!/bin/bash
# mkinitramfs.sh BUSYBOX_STATIC MODDIR OUT.cpio.gz MODULE...
#   Builds the guest's initramfs: a static busybox, the named modules and their dependencies
#   (in load order, built-in ones skipped; see kernel.py modorder) and initramfs-init as /init.
#   Used by test-image/build.sh and production/build-production.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 4 ] || { echo "usage: $0 BUSYBOX_STATIC MODDIR OUT.cpio.gz MODULE..." >&2; exit 2; }
BB=$1 MODDIR=$2 OUTF=$3; shift 3

IR=$(mktemp -d "${TMPDIR:-/tmp}/gah-initramfs.XXXXXX")
trap 'rm -rf "$IR"' EXIT
mkdir -p "$IR"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BB" "$IR/bin/busybox"
for a in sh mount umount insmod switch_root mkdir usleep sleep cat echo reboot sync ls; do
  ln -s busybox "$IR/bin/$a"
done
: >"$IR/modules.order"
python3 "$HERE/kernel.py" modorder "$MODDIR" "$@" | while read -r m; do
  b=${m##*/}; b=${b%.ko*}.ko
  case "$m" in
    *.ko) cp "$MODDIR/$m" "$IR/lib/modules/$b" ;;
    *.ko.xz) xz -dc "$MODDIR/$m" >"$IR/lib/modules/$b" ;;
    *.ko.zst) zstd -dcq "$MODDIR/$m" >"$IR/lib/modules/$b" ;;
    *.ko.gz) gzip -dc "$MODDIR/$m" >"$IR/lib/modules/$b" ;;
    *) echo "mkinitramfs.sh: unknown module file $m" >&2; exit 1 ;;
  esac
  echo "$b" >>"$IR/modules.order"
done
install -m 0755 "$HERE/initramfs-init" "$IR/init"
( cd "$IR" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner 0:0 --quiet ) \
  | gzip -9 -n >"$OUTF.tmp"
mv "$OUTF.tmp" "$OUTF"
echo "mkinitramfs.sh: $OUTF ($(tr '\n' ' ' <"$IR/modules.order"))"
