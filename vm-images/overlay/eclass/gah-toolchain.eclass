# Copyright 2025 gentoo@home authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: gah-toolchain.eclass
# @MAINTAINER:
# gentoo@home <gah@localhost>
# @SUPPORTED_EAPIS: 8
# @BLURB: A tiny stand-in for ::gentoo's toolchain-funcs (this repository has no masters).
# @DESCRIPTION:
# The gentoo@home pipeline builds every configuration with two compilers,
# chosen through CC/CXX in the environment (gcc/g++ or clang/clang++).
# gah_tc_export exports the tool variables with GNU defaults and logs which
# compiler is used, so the build log records it.

case ${EAPI} in
	8) ;;
	*) die "${ECLASS}: EAPI ${EAPI:-0} not supported" ;;
esac

if [[ -z ${_GAH_TOOLCHAIN_ECLASS} ]]; then
_GAH_TOOLCHAIN_ECLASS=1

# @FUNCTION: gah_tc_export
# @DESCRIPTION:
# Export CC, CXX, CPP, AR, NM and RANLIB (defaults: gcc, g++, "${CC} -E",
# ar, nm, ranlib) and print the compiler's identity into the build log.
gah_tc_export() {
	export CC=${CC:-gcc} CXX=${CXX:-g++}
	export CPP=${CPP:-${CC} -E}
	export AR=${AR:-ar} NM=${NM:-nm} RANLIB=${RANLIB:-ranlib}
	einfo "gah-toolchain: CC=${CC} ($(${CC} --version | head -n 1))"
	einfo "gah-toolchain: CXX=${CXX} ($(${CXX} --version | head -n 1))"
}

# @FUNCTION: gah_tc_is_clang
# @DESCRIPTION:
# Return 0 if CC is clang.
gah_tc_is_clang() {
	[[ $(${CC:-gcc} --version 2>/dev/null) == *clang* ]]
}

fi
