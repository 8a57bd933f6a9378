# Copyright 2026 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit gah-fixture

DESCRIPTION="Localiser fixture: fails its test when USE=alpha and USE=gamma are both on"
HOMEPAGE="https://gentoo-at-home.invalid/"
LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"
IUSE="alpha beta gamma delta"

gah_fixture_source() {
	cat <<-'EOF'
	#include <stdio.h>
	int main(void) {
	#if defined(USE_alpha) && defined(USE_gamma)
		puts("fixture: USE=alpha with USE=gamma fails this test");
		return 1;
	#else
		return 0;
	#endif
	}
	EOF
}
