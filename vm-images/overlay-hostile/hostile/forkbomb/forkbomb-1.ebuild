# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="Hostile: a bounded fork bomb whose processes outlive the build"
HOMEPAGE="https://example.invalid/gah-hostile"
S="${WORKDIR}"

LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"

src_compile() {
	${CC:-gcc} -O2 -o bomb "${FILESDIR}"/bomb.c || die
}

src_install() {
	exeinto /usr/libexec/gah-hostile
	doexe bomb
}

# Outside Portage's pid sandbox (pkg_postinst has none): the processes stay after the phase,
# after emerge and after the agent, unless the guest ends them. 5000 is above any sane
# process limit; each lives 150 s, far longer than the rest of the job.
pkg_postinst() {
	"${EROOT}"/usr/libexec/gah-hostile/bomb 5000 150
}
