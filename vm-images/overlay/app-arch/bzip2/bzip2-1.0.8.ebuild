# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit gah-toolchain

DESCRIPTION="High-quality block-sorting file compressor"
HOMEPAGE="https://sourceware.org/bzip2/"
# Repacked from the bzip2-1.0.8/ tree vendored by the crates.io package
# bzip2-sys 0.1.13+1.0.8 (vm-images/distfiles/make-distfiles.sh).
SRC_URI="bzip2-1.0.8.tar.gz"
RESTRICT="mirror fetch"

LICENSE="BZIP2"
SLOT="0/1"
KEYWORDS="amd64"
IUSE="jemalloc static-libs fixture-compile-error fixture-test-failure"
# The fixtures are exercised one at a time: a compile error would hide the test failure.
REQUIRED_USE="?? ( fixture-compile-error fixture-test-failure )"

# USE=jemalloc links the bzip2 programs against dev-libs/jemalloc (the
# library is linked in, so it is a build- and a run-time dependency).  This
# is the kind of optional allocator switch many Gentoo packages carry.
DEPEND="jemalloc? ( dev-libs/jemalloc:= )"
RDEPEND="${DEPEND}"

src_prepare() {
	default

	# Honour LDFLAGS in the shared-library makefile (as ::gentoo does).
	sed -i \
		-e 's:$(CC) -shared:$(CC) $(LDFLAGS) -shared:' \
		-e 's:$(CC) $(CFLAGS) -o bzip2-shared:$(CC) $(CFLAGS) $(LDFLAGS) -o bzip2-shared:' \
		Makefile-libbz2_so || die

	if use fixture-compile-error; then
		# Documented fixture (see metadata.xml and the repository README):
		# a line that is not C, so the build fails in the compile phase.
		echo 'gah_fixture_compile_error this is not C;' >> bzlib.c || die
	fi
	if use fixture-test-failure; then
		# Documented fixture: corrupt one byte of a reference output, so
		# upstream's `make test` (cmp against sample2.ref) fails in src_test.
		printf 'X' | dd of=sample2.ref bs=1 seek=100 conv=notrunc status=none || die
	fi
}

src_configure() {
	gah_tc_export
	# No configure script: bzip2 ships plain Makefiles.
	BZ_CFLAGS="${CFLAGS} -D_FILE_OFFSET_BITS=64 -Wall"
	BZ_LDFLAGS="${LDFLAGS}"
	if use jemalloc; then
		# -ljemalloc comes before the objects in upstream's link lines, so
		# keep it from being dropped by --as-needed.
		BZ_LDFLAGS+=" -L${ESYSROOT}/usr/$(get_libdir) -Wl,--no-as-needed -ljemalloc -Wl,--as-needed"
	fi
}

src_compile() {
	# Shared library (and the programs linked against it) first, then the
	# static library from the same PIC objects.
	emake -f Makefile-libbz2_so CC="${CC}" CFLAGS="${BZ_CFLAGS} -fPIC" \
		LDFLAGS="${BZ_LDFLAGS}" all
	ln -sf libbz2.so.1.0.8 libbz2.so || die
	ln -sf libbz2.so.1.0.8 libbz2.so.1 || die
	emake CC="${CC}" AR="${AR}" RANLIB="${RANLIB}" CFLAGS="${BZ_CFLAGS} -fPIC" \
		LDFLAGS="${BZ_LDFLAGS}" libbz2.a bzip2 bzip2recover
}

src_test() {
	# Upstream's own test: compress/decompress sample{1,2,3} and cmp them
	# against the reference files shipped in the tarball.
	emake -j1 CC="${CC}" CFLAGS="${BZ_CFLAGS} -fPIC" LDFLAGS="${BZ_LDFLAGS}" test
	if use jemalloc; then
		LC_ALL=C ldd ./bzip2-shared | grep -q libjemalloc || die "bzip2 is not linked against jemalloc"
	fi
}

src_install() {
	local libdir=/usr/$(get_libdir)
	dodir ${libdir}
	cp -P libbz2.so.1.0.8 libbz2.so.1.0 libbz2.so.1 libbz2.so "${ED}"${libdir}/ || die
	use static-libs && { insinto ${libdir}; doins libbz2.a; }
	insinto /usr/include
	doins bzlib.h

	newbin bzip2-shared bzip2
	dobin bzip2recover bzdiff bzgrep bzmore
	dosym bzip2 /usr/bin/bunzip2
	dosym bzip2 /usr/bin/bzcat
	doman bzip2.1
	dodoc CHANGES README
}
