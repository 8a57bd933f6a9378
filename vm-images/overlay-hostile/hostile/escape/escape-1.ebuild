# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="Hostile: tries every way out of the guest and reports each attempt"
HOMEPAGE="https://example.invalid/gah-hostile"
S="${WORKDIR}"

LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"
# Outside Portage's own network sandbox too: gentoo@home's guest is what must hold.
RESTRICT="network-sandbox"

src_compile() {
	echo "escape: nothing to build" > escape.txt || die
}

src_install() {
	insinto /usr/libexec/gah-hostile
	doins escape.txt
	exeinto /usr/libexec/gah-hostile
	doexe "${FILESDIR}"/escape.sh "${FILESDIR}"/syscalls.py
}

# pkg_postinst runs as the guest's root with none of Portage's sandboxes (no network, ipc or
# pid namespace of its own): the widest a hostile package gets.
pkg_postinst() {
	bash "${EROOT}"/usr/libexec/gah-hostile/escape.sh 2>&1
}
