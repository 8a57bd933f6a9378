#!/bin/sh
# make-distfiles.sh [OUTDIR]
#
# Produces the distfiles of the `gah` overlay (vm-images/overlay) from real
# upstream C source trees that crates.io packages vendor.  Nothing is
# downloaded from upstream project sites: cargo fetches the pinned crates from
# crates.io (exact `=` versions), `cargo vendor` unpacks them, and each
# upstream tree is repacked byte-reproducibly (sorted names, mtime 0, uid/gid
# 0, normalised modes, gzip -n) so that the overlay's Manifest checksums stay
# valid.  Idempotent: existing tarballs are rebuilt into a temporary file and
# only replaced when the bytes differ.
#
#   crate (crates.io)                         upstream tree     -> distfile
#   bzip2-sys  =0.1.13+1.0.8                  bzip2-1.0.8/      -> bzip2-1.0.8.tar.gz
#   lzma-sys   =0.1.20                        xz-5.2/           -> xz-5.2.5.tar.gz
#   tikv-jemalloc-sys =0.7.1+5.3.1-0-g81034ce jemalloc/         -> jemalloc-5.3.1.tar.gz
#   libffi-sys =4.2.2                         libffi/           -> libffi-3.6.0.tar.gz
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-$top/.cache/distfiles}
work=${GAH_CARGO_WORK:-$top/.cache/cargo-vendor}

mkdir -p "$out" "$work/src"
out=$(cd "$out" && pwd)

cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "gah-distfiles"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
bzip2-sys = "=0.1.13+1.0.8"
lzma-sys = "=0.1.20"
tikv-jemalloc-sys = "=0.7.1+5.3.1-0-g81034ce1f1373e37dc865038e1bc8eeecf559ce8"
libffi-sys = "=4.2.2"

[workspace]
TOML
[ -f "$work/src/main.rs" ] || echo 'fn main() {}' > "$work/src/main.rs"

(cd "$work" && cargo vendor --quiet --versioned-dirs vendor >/dev/null)
v=$work/vendor

# repack SRCDIR TOPNAME TARBALL
repack() {
	src=$1 name=$2 tarball=$3
	[ -d "$src" ] || { echo "missing upstream tree: $src" >&2; exit 1; }
	parent=$(dirname "$src") base=$(basename "$src")
	tmp=$out/.$tarball.tmp
	# --transform renames the top directory; the list is sorted by tar itself.
	LC_ALL=C tar -C "$parent" \
		--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		--mode='u+rwX,go+rX,go-w' --format=gnu \
		--exclude='.cargo-ok' --exclude='.cargo_vcs_info.json' \
		--transform="s,^$base,$name," \
		-cf - "$base" | gzip -n -9 > "$tmp"
	if [ -f "$out/$tarball" ] && cmp -s "$tmp" "$out/$tarball"; then
		rm -f "$tmp"
	else
		mv "$tmp" "$out/$tarball"
	fi
	echo "$tarball"
}

repack "$v/bzip2-sys-0.1.13+1.0.8/bzip2-1.0.8" bzip2-1.0.8 bzip2-1.0.8.tar.gz
repack "$v/lzma-sys-0.1.20/xz-5.2" xz-5.2.5 xz-5.2.5.tar.gz
repack "$v/tikv-jemalloc-sys-0.7.1+5.3.1-0-g81034ce1f1373e37dc865038e1bc8eeecf559ce8/jemalloc" \
	jemalloc-5.3.1 jemalloc-5.3.1.tar.gz
repack "$v/libffi-sys-4.2.2/libffi" libffi-3.6.0 libffi-3.6.0.tar.gz

cd "$out" && sha256sum bzip2-1.0.8.tar.gz xz-5.2.5.tar.gz jemalloc-5.3.1.tar.gz libffi-3.6.0.tar.gz
