# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit gah-toolchain

MY_P="xz-${PV}"
DESCRIPTION="Utils for managing LZMA compressed files"
HOMEPAGE="https://tukaani.org/xz/"
# Repacked from the xz-5.2/ tree (5.2.5) vendored by the crates.io package
# lzma-sys 0.1.20 (vm-images/distfiles/make-distfiles.sh).  It is a git-style
# tree without a generated configure, hence autoreconf in src_prepare.
SRC_URI="${MY_P}.tar.gz"
S="${WORKDIR}/${MY_P}"
RESTRICT="mirror fetch"

LICENSE="public-domain LGPL-2.1+ GPL-2+"
SLOT="0"
KEYWORDS="amd64"
IUSE="debug jemalloc +scripts small static-libs +threads +xz +xzdec"
# xzdiff/xzgrep/xzless/xzmore are wrappers that run the xz program.
REQUIRED_USE="scripts? ( xz )"

# USE=jemalloc links liblzma's programs against dev-libs/jemalloc (an
# optional allocator switch as many Gentoo packages carry; xz's
# multi-threaded encoder is allocation-heavy, so it is a plausible one).
DEPEND="jemalloc? ( dev-libs/jemalloc:= )"
RDEPEND="${DEPEND}"
BDEPEND="
	>=sys-devel/autoconf-2.69
	>=sys-devel/automake-1.12
	sys-devel/libtool
"

src_prepare() {
	default

	# The tree has no generated build system.  Its configure.ac wants GNU
	# gettext's autopoint (not in the guest image); drop NLS so that a
	# plain `autoreconf -fi` suffices.  The programs are then English-only.
	sed -i -e '/AM_GNU_GETTEXT/d' -e '\,po/Makefile.in,d' configure.ac || die
	sed -i -e 's/^SUBDIRS += src po tests$/SUBDIRS += src tests/' \
		-e 's/^DIST_SUBDIRS = lib src po tests debug$/DIST_SUBDIRS = lib src tests debug/' \
		Makefile.am || die
	autoreconf -fi || die "autoreconf failed"
}

src_configure() {
	gah_tc_export
	local myconf=(
		--disable-nls
		--disable-doc
		--disable-lzmainfo
		$(use_enable debug)
		$(use_enable scripts)
		$(use_enable small)
		$(use_enable static-libs static)
		$(use_enable threads threads $(usex threads posix no))
		$(use_enable xz)
		$(use_enable xz lzma-links)
		$(use_enable xzdec)
		$(use_enable xzdec lzmadec)
	)
	if use jemalloc; then
		# LIBS goes after the objects, so --as-needed keeps it: the
		# programs' malloc/free then resolve to jemalloc's.
		export LIBS="-ljemalloc ${LIBS}"
	fi
	econf "${myconf[@]}"
}

src_test() {
	# Upstream's full `make check` (liblzma unit tests, the .xz/.lzma test
	# files, round trips with the built xz, xzgrep/xzdiff script tests).
	emake check
	if use jemalloc && use xz; then
		# src/xz/xz is a libtool wrapper script when xz links liblzma.so.
		local xzbin=src/xz/xz
		[[ -x src/xz/.libs/xz ]] && xzbin=src/xz/.libs/xz
		LC_ALL=C ldd "${xzbin}" | grep -q libjemalloc || die "xz is not linked against jemalloc"
	fi
}

src_install() {
	default
	find "${ED}" -name '*.la' -delete || die
}
