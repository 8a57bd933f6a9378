# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit gah-toolchain

DESCRIPTION="General-purpose scalable concurrent malloc(3) implementation"
HOMEPAGE="https://jemalloc.net/ https://github.com/jemalloc/jemalloc"
# Repacked from the jemalloc/ tree vendored by the crates.io package
# tikv-jemalloc-sys 0.7.1+5.3.1-0-g81034ce1f1373e37dc865038e1bc8eeecf559ce8
# (vm-images/distfiles/make-distfiles.sh).  It is a git tree: no VERSION
# file and no configure, so the version is passed in and autoconf is run.
JE_GIT_VERSION="5.3.1-0-g81034ce1f1373e37dc865038e1bc8eeecf559ce8"
SRC_URI="${P}.tar.gz"
RESTRICT="mirror fetch"

LICENSE="BSD-2"
SLOT="0/2"
KEYWORDS="amd64"
IUSE="+cxx debug +fill log prof prof-libgcc prof-libunwind +stats static-libs xmalloc"
# The backtrace methods only matter for heap profiling, and jemalloc uses one
# of them: libunwind, libgcc's unwinder, or (neither flag) gcc intrinsics.
REQUIRED_USE="
	prof-libgcc? ( prof )
	prof-libunwind? ( prof )
	?? ( prof-libgcc prof-libunwind )
"

DEPEND="prof-libunwind? ( sys-libs/libunwind )"
RDEPEND="${DEPEND}"
BDEPEND=">=sys-devel/autoconf-2.68"

src_prepare() {
	default
	autoconf || die "autoconf failed"
}

src_configure() {
	gah_tc_export
	local myconf=(
		--with-version="${JE_GIT_VERSION}"
		$(use_enable cxx)
		$(use_enable debug)
		$(use_enable fill)
		$(use_enable log)
		$(use_enable prof)
		$(use_enable prof-libunwind)
		$(use_enable prof-libgcc)
		$(use_enable stats)
		$(use_enable static-libs static)
		$(use_enable xmalloc)
	)
	# Without a method flag, profiling falls back to gcc's intrinsics.
	use prof && ! use prof-libgcc && ! use prof-libunwind && myconf+=( --enable-prof-gcc )
	econf "${myconf[@]}"
}

src_test() {
	# Subset, for the pipeline's time budget: the integration suite
	# (test/integration, 14 C + 3 C++ programs linked against the library
	# just built: malloc/mallocx/rallocx/xallocx/sdallocx, aligned_alloc,
	# posix_memalign, overflow, arenas, thread caches, extent hooks, C++
	# new/delete), plus the same suite again with MALLOC_CONF=prof:true when
	# USE=prof.  Not run: test/unit (~170 programs that need a second,
	# jet_-prefixed build of the whole library: several minutes on 2 cores),
	# test/stress and test/analyze (benchmarks).
	if gah_tc_is_clang; then
		# Debian's clang 14.0.6 segfaults in its optimizer (exit 139) on
		# test/integration/aligned_alloc.c at -O1 and above, in every
		# configuration: build that one test program at -O0.
		emake test/integration/aligned_alloc.o SPECIFIED_CFLAGS="${CFLAGS} -O0"
	fi
	emake -j1 check_integration
	if use prof; then
		emake -j1 check_integration_prof
	fi
}

src_install() {
	emake DESTDIR="${D}" install_bin install_include install_lib
	dodoc ChangeLog README TUNING.md
}
