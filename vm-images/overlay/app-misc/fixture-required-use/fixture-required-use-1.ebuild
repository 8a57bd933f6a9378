# Copyright 2026 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit gah-fixture

DESCRIPTION="Localiser fixture: fails to compile with USE=alpha, which REQUIRED_USE ties to beta"
HOMEPAGE="https://gentoo-at-home.invalid/"
LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"
IUSE="alpha beta gamma"
REQUIRED_USE="alpha? ( beta )"

gah_fixture_source() {
	cat <<-'EOF'
	#ifdef USE_alpha
	#error "fixture: does not compile with USE=alpha"
	#endif
	int main(void) { return 0; }
	EOF
}
