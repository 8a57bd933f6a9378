# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="Hostile: writes until the disk (or a limit) says no"
HOMEPAGE="https://example.invalid/gah-hostile"
S="${WORKDIR}"

LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"

# Each target gets at most 1 GiB (1024 blocks of 1 MiB): enough to cross the test's
# 256 MiB limit four times over, never enough to fill a shared host's disk.
fill() {
	local target=$1 out rc
	out=$(dd if=/dev/zero of="${target}" bs=1M count=1024 2>&1)
	rc=$?
	if [[ ${rc} -eq 0 ]]; then
		echo "GAH-HOSTILE diskfill.${2} allowed wrote 1024 MiB to ${target}"
	else
		echo "GAH-HOSTILE diskfill.${2} denied rc=${rc} $(du -m "${target}" 2>/dev/null | cut -f1) MiB in ${target}: $(tr '\n' ' ' <<<"${out}")"
	fi
}

src_compile() {
	fill "${T}"/fill scratch
	fill /gah/out/gah-hostile-fill out
	# Keep both files a while, so a limit that watches the disk can see them.
	sleep 5
	echo done > done.txt || die
}

src_install() {
	insinto /usr/share/gah-hostile
	doins done.txt
}
