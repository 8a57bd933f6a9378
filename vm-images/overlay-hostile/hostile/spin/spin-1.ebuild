# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="Hostile: never ends, and leaves the host's reader a FIFO for a build log"
HOMEPAGE="https://example.invalid/gah-hostile"
S="${WORKDIR}"

LICENSE="public-domain"
SLOT="0"
KEYWORDS="amd64"

src_compile() {
	# The agent writes build.log through the descriptor it opened before emerge: the name
	# can be swapped under it. A FIFO blocks whoever opens it to read.
	rm -f /gah/out/build.log /gah/out/emerge-info.txt
	mkfifo /gah/out/build.log /gah/out/emerge-info.txt \
		&& echo "GAH-HOSTILE spin.fifo allowed build.log and emerge-info.txt are FIFOs" \
		|| echo "GAH-HOSTILE spin.fifo denied"
	# A sleeper in its own session escapes emerge's process group.
	setsid sleep 100000 </dev/null >/dev/null 2>&1 &
	echo "GAH-HOSTILE spin.loop info spinning"
	while :; do :; done
}
