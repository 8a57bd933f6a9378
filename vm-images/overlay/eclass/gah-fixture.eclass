# Copyright 2026 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: gah-fixture.eclass
# @MAINTAINER:
# gentoo@home <gah@localhost>
# @SUPPORTED_EAPIS: 8
# @BLURB: Tiny packages whose failures have known causes (the failure localiser's fixtures).
# @DESCRIPTION:
# Each app-misc/fixture-* package is one C file, written by the ebuild's
# gah_fixture_source function, built with -DUSE_<flag> for every enabled
# flag of IUSE (so the file's #if lines decide which flag values, and which
# compiler, make it fail) and run as its test.  No distfile: a build takes a
# few seconds.  The known causes are in the repository README.

case ${EAPI} in
	8) ;;
	*) die "${ECLASS}: EAPI ${EAPI:-0} not supported" ;;
esac

if [[ -z ${_GAH_FIXTURE_ECLASS} ]]; then
_GAH_FIXTURE_ECLASS=1

inherit gah-toolchain

S="${WORKDIR}/${P}"

# @FUNCTION: gah_fixture_defines
# @DESCRIPTION:
# Print -DUSE_<flag> for every enabled flag of IUSE.
gah_fixture_defines() {
	local f
	for f in ${IUSE}; do
		f=${f#[+-]}
		use "${f}" && printf -- '-DUSE_%s ' "${f//-/_}"
	done
}

gah-fixture_src_unpack() {
	mkdir -p "${S}" || die
	gah_fixture_source > "${S}/fixture.c" || die
}

gah-fixture_src_configure() {
	gah_tc_export
}

gah-fixture_src_compile() {
	local defines=$(gah_fixture_defines)
	einfo "gah-fixture: ${CC} ${defines}"
	${CC} ${CFLAGS} ${defines} ${LDFLAGS} -o fixture fixture.c || die "fixture.c does not compile"
}

gah-fixture_src_test() {
	./fixture || die "the fixture's test failed"
}

gah-fixture_src_install() {
	newbin fixture ${PN}
}

EXPORT_FUNCTIONS src_unpack src_configure src_compile src_test src_install

fi
