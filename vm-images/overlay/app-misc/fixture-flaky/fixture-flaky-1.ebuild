# Copyright 2026 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit gah-fixture

DESCRIPTION="Localiser fixture: fails its test until the project has built app-misc/fixture-flaky-later"
HOMEPAGE="https://gentoo-at-home.invalid/"
LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"
IUSE=""

gah_fixture_source() {
	echo 'int main(void) { return 0; }'
}

src_test() {
	# The guest sees the project's binary packages as /gah/in/binpkgs (no
	# index: the guest's Portage writes its own). The sweep builds this
	# package before fixture-flaky-later (plans go by cpv), so its first build
	# fails and a rerun, once the later package's binary package is in the
	# store, passes: a failure that does not reproduce.
	compgen -G '/gah/in/binpkgs/app-misc/fixture-flaky-later/fixture-flaky-later-*.gpkg.tar' >/dev/null ||
		die "fixture: fails until app-misc/fixture-flaky-later has been built"
}
