# Copyright 2026 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit gah-fixture

DESCRIPTION="Localiser fixture: always builds; its binary package makes app-misc/fixture-flaky pass"
HOMEPAGE="https://gentoo-at-home.invalid/"
LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"
IUSE=""

gah_fixture_source() {
	echo 'int main(void) { return 0; }'
}
