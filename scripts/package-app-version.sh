#!/usr/bin/env bash
# Lays out a gentoo@home BOINC app version.
#
#   scripts/package-app-version.sh [options] OUTDIR
#
# OUTDIR gets the anonymous-platform folder, ready to be the contents of a client's
# projects/<project folder>/: gah-app (main program), gah-agent, libboinc_api.so.7,
# libboinc.so.7, the guest image files named by content and app_info.xml (from
# templates/app_info.xml). The guest flavour decides the image files:
#   vm       vmlinux-<sha>, initramfs-<sha>.cpio.gz, rootfs-<sha>.ext4 (none with
#            --disk-in-repository: the disk then comes from the project's repository)
#   sandbox  rootfs-<sha>.tar: the root folder as one file (BOINC ships files, not folders);
#            gah-app unpacks it once per host beside itself. The tar is made from the image's
#            rootfs/ and cached as IMAGE/rootfs.tar until the image changes. None with
#            --base-in-repository: the root then comes from the project's repository.
#   both     all four (gah-app --backend auto picks on the host)
#
# Options:
#   --bin DIR          where gah-app and gah-agent are          [target/release]
#   --image DIR        the guest image (vmlinux, initramfs.cpio.gz, rootfs.ext4, rootfs/)
#                                                               [.cache/images/test]
#   --guest FLAVOUR    vm, sandbox or both                       [vm]
#   --version-num N    app version number                       [100]
#   --plan-class NAME  plan class (see templates/plan_class_spec.xml) [vm, or sandbox for
#                      --guest sandbox]
#   --avg-ncpus N      CPUs the client budgets for a task        [1]
#   --cmdline ARGS     arguments the client passes to gah-app
#                      [--backend vm, --backend sandbox or --backend auto, by flavour]
#   --cvmfs-key FILE   the public master key of the project's CernVM-FS repository
#                      (<name>.pub, e.g. gentoo.gah.pub): an app version file under that
#                      logical name, which gah-app verifies each workunit's data.json
#                      repository against. Without it, workunits cannot be read.
#   --base-in-repository
#                      the sandbox's guest root is published in the project's CernVM-FS
#                      repository (at /base, as gah deploy does): no rootfs.tar; gah-app
#                      reads the root once per host and base from there.
#   --disk-in-repository
#                      the vm's root disk is published in the project's CernVM-FS
#                      repository (at /base-disk/rootfs.ext4, as gah deploy does): no
#                      rootfs.ext4; gah-app reads the disk once per host and content.
#   --link             hard-link the big files instead of copying (same file system; tests)
#   --boinc-apps DIR   also lay out the server-sent app version as BOINC's update_versions
#                      reads it (tools/update_versions): DIR/gah/<version>/
#                      x86_64-pc-linux-gnu__<plan class>/ with every file named by its
#                      content (BOINC download files are immutable: a new gah-app is a new
#                      name) and a version.xml giving each its logical name. The BOINC
#                      libraries are <copy_file/>, so they land in the slot under their
#                      sonames (the client puts the slot on LD_LIBRARY_PATH). DIR is
#                      normally the project's apps/; then run the project's
#                      bin/update_versions, which signs the files with its code-signing
#                      key, gzips them (<gzip/>) and stages them in download/.
#                      A server-sent version carries no <cmdline>: gah-app picks its
#                      backend from the plan class in init_data.xml.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true  # bash 5.2: '&' in ${x//p/r} is literal
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
image="$root/.cache/images/test"
version_num=100
plan_class=""
avg_ncpus=1
cmdline=""
guest=vm
link=0
boinc_apps=""
cvmfs_key=""
base_in_repository=0
disk_in_repository=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    --version-num) version_num="$2"; shift 2 ;;
    --plan-class) plan_class="$2"; shift 2 ;;
    --avg-ncpus) avg_ncpus="$2"; shift 2 ;;
    --cmdline) cmdline="$2"; shift 2 ;;
    --guest) guest="$2"; shift 2 ;;
    --link) link=1; shift ;;
    --base-in-repository) base_in_repository=1; shift ;;
    --disk-in-repository) disk_in_repository=1; shift ;;
    --cvmfs-key) cvmfs_key="$2"; shift 2 ;;
    --boinc-apps) boinc_apps="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "package-app-version: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
out="$1"
die() { echo "package-app-version: $*" >&2; exit 1; }
disk=("$image/rootfs.ext4")
[ "$disk_in_repository" = 0 ] || disk=()
case "$guest" in
  vm) need=("$image/vmlinux" "$image/initramfs.cpio.gz" "${disk[@]}"); default_cmdline="--backend vm" ;;
  sandbox) need=(); default_cmdline="--backend sandbox" ;;
  both) need=("$image/vmlinux" "$image/initramfs.cpio.gz" "${disk[@]}"); default_cmdline="--backend auto" ;;
  *) die "--guest must be vm, sandbox or both, not '$guest'" ;;
esac
[ -n "$cmdline" ] || cmdline="$default_cmdline"
[ -n "$plan_class" ] || { [ "$guest" = sandbox ] && plan_class=sandbox || plan_class=vm; }
for f in "$bin/gah-app" "$bin/gah-agent" "${need[@]}"; do
  [ -f "$f" ] || die "$f is missing (cargo build --release; scripts/setup.sh builds the image)"
done
if [ "$guest" != vm ] && [ "$base_in_repository" = 0 ]; then
  [ -f "$image/rootfs/bin/sh" ] || [ -f "$image/rootfs.tar" ] || die "$image/rootfs/ is missing (scripts/setup.sh builds the image)"
fi
mkdir -p "$out"

# put SRC NAME [exec]: copy (or hard-link) SRC to OUTDIR/NAME, replacing what was there.
put() {
  local src dst
  src="$(readlink -f "$1")"; dst="$out/$2"
  rm -f "$dst"
  if [ "$link" = 1 ] && ln "$src" "$dst" 2>/dev/null; then
    # A hard link shares the mode with its source: only check it.
    if [ "${3:-}" = exec ] && [ ! -x "$dst" ]; then die "$src is not executable"; fi
  else
    cp "$src" "$dst.tmp" && mv "$dst.tmp" "$dst"
    if [ "${3:-}" = exec ]; then chmod 0755 "$dst"; else chmod 0644 "$dst"; fi
  fi
}
# The BOINC libraries gah-app links (it finds them beside itself: rpath $ORIGIN, and the
# client also puts the project folder first on LD_LIBRARY_PATH).
lib_of() {
  local p
  p="$(ldd "$bin/gah-app" | awk -v l="$1" '$1 == l { print $3 }')"
  [ -n "$p" ] && [ -f "$p" ] || die "gah-app does not link $1 (ldd: $(ldd "$bin/gah-app" | tr '\n' ' '))"
  echo "$p"
}
# sha256 (first 16 hex digits), cached by path, size and mtime: the root disk is GBs.
hash_cache="$root/.cache/package-app-version.hashes"
hash_of() {
  local key h
  key="$(readlink -f "$1") $(stat -L -c '%s %Y' "$1")"
  h="$(awk -v k="$key" 'substr($0, 1, length(k)) == k && length($0) == length(k) + 17 { print substr($0, length(k) + 2) }' "$hash_cache" 2>/dev/null | tail -n1)"
  if [ -z "$h" ]; then
    h="$(sha256sum "$1" | cut -c1-16)"
    mkdir -p "$(dirname "$hash_cache")" && echo "$key $h" >> "$hash_cache" || true
  fi
  echo "$h"
}

# The sandbox's root as one tar, rebuilt when the image is newer. Sorted, numeric owners,
# no device nodes (the sandbox mounts its own /dev): the same tree gives the same bytes.
rootfs_tar() {
  local tar="$image/rootfs.tar"
  if [ ! -f "$tar" ] || { [ -d "$image/rootfs" ] && [ "$image/rootfs" -nt "$tar" ]; } || { [ -f "$image/stamp" ] && [ "$image/stamp" -nt "$tar" ]; }; then
    echo "package-app-version: packing $image/rootfs into $tar" >&2
    tar -C "$image/rootfs" --sort=name --numeric-owner --format=gnu \
      --exclude='./dev/*' -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  fi
  echo "$tar"
}

put "$bin/gah-app" gah-app exec
put "$bin/gah-agent" gah-agent exec
put "$(lib_of libboinc_api.so.7)" libboinc_api.so.7
put "$(lib_of libboinc.so.7)" libboinc.so.7
# image files: "physical name|logical name|source"
images=()
if [ "$guest" != sandbox ]; then
  images+=("vmlinux-$(hash_of "$image/vmlinux")|vmlinux|$image/vmlinux")
  images+=("initramfs-$(hash_of "$image/initramfs.cpio.gz").cpio.gz|initramfs.cpio.gz|$image/initramfs.cpio.gz")
  if [ "$disk_in_repository" = 0 ]; then
    images+=("rootfs-$(hash_of "$image/rootfs.ext4").ext4|rootfs.ext4|$image/rootfs.ext4")
  fi
fi
if [ "$guest" != vm ] && [ "$base_in_repository" = 0 ]; then
  tar_src="$(rootfs_tar)"
  images+=("rootfs-$(hash_of "$tar_src").tar|rootfs.tar|$tar_src")
fi
if [ -n "$cvmfs_key" ]; then
  [ -f "$cvmfs_key" ] || { echo "package-app-version: no key file $cvmfs_key" >&2; exit 1; }
  images+=("cvmfs-key-$(hash_of "$cvmfs_key").pub|$(basename "$cvmfs_key")|$cvmfs_key")
fi
# Drop image files of other contents left by an earlier run (and what gah-app unpacked
# from them: an unpacked root only goes once its tar is gone).
keep=()
for i in "${images[@]}"; do keep+=(! -name "${i%%|*}"); done
find "$out" -maxdepth 1 -type f \( -name 'vmlinux-*' -o -name 'initramfs-*.cpio.gz' -o -name 'rootfs-*.ext4' -o -name 'rootfs-*.tar' -o -name 'cvmfs-key-*.pub' \) \
  "${keep[@]}" -delete
file_infos=""; file_refs=""; image_names=()
for i in "${images[@]}"; do
  IFS='|' read -r physical logical src <<< "$i"
  [ -f "$out/$physical" ] || put "$src" "$physical"
  image_names+=("$physical")
  file_infos+="    <file_info>"$'\n'"        <name>$physical</name>"$'\n'"    </file_info>"$'\n'
  file_refs+="        <file_ref>"$'\n'"            <file_name>$physical</file_name>"$'\n'"            <open_name>$logical</open_name>"$'\n'"        </file_ref>"$'\n'
done

xml_escape() { local s="$1"; s="${s//&/&amp;}"; s="${s//</&lt;}"; s="${s//>/&gt;}"; printf '%s' "$s"; }
t="$(cat "$root/templates/app_info.xml")"
t="${t//@IMAGE_FILE_INFOS@$'\n'/$file_infos}"
t="${t//@IMAGE_FILE_REFS@$'\n'/$file_refs}"
t="${t//@VERSION_NUM@/$version_num}"
t="${t//@PLAN_CLASS@/$(xml_escape "$plan_class")}"
t="${t//@AVG_NCPUS@/$avg_ncpus}"
t="${t//@CMDLINE@/$(xml_escape "$cmdline")}"
printf '%s\n' "$t" > "$out/app_info.xml.tmp"
mv "$out/app_info.xml.tmp" "$out/app_info.xml"

if [ -n "$boinc_apps" ]; then
  vdir="$boinc_apps/gah/$version_num/x86_64-pc-linux-gnu__$plan_class"
  mkdir -p "$vdir"
  # "physical name|logical name|tags" for version.xml; the physical name carries the hash.
  entries=()
  content_name() { # NAME: NAME-<sha> before the first dot, else at the end
    local name="$1" h; h="$(hash_of "$out/$name")"
    case "$name" in *.*) echo "${name%%.*}-$h.${name#*.}" ;; *) echo "$name-$h" ;; esac
  }
  entries+=("$(content_name gah-app)||<main_program/> <gzip/>")
  entries+=("$(content_name gah-agent)|gah-agent|<gzip/>")
  entries+=("$(content_name libboinc_api.so.7)|libboinc_api.so.7|<copy_file/>")
  entries+=("$(content_name libboinc.so.7)|libboinc.so.7|<copy_file/>")
  for i in "${images[@]}"; do
    IFS='|' read -r physical logical _ <<< "$i"
    # The initramfs is compressed already.
    case "$physical" in initramfs-*) tags="" ;; *) tags="<gzip/>" ;; esac
    entries+=("$physical|$logical|$tags")
  done
  sources=(gah-app gah-agent libboinc_api.so.7 libboinc.so.7 "${image_names[@]}")
  # A version folder holds exactly its files: update_versions would ship any other one.
  keep=(! -name version.xml)
  for e in "${entries[@]}"; do keep+=(! -name "${e%%|*}"); done
  find "$vdir" -maxdepth 1 -type f "${keep[@]}" -delete
  {
    echo "<!-- gentoo@home app version $version_num ($plan_class), made by scripts/package-app-version.sh -->"
    echo "<version>"
    for n in "${!entries[@]}"; do
      IFS='|' read -r physical logical tags <<< "${entries[$n]}"
      src="$out/${sources[$n]}"
      if [ ! -f "$vdir/$physical" ]; then
        ln "$(readlink -f "$src")" "$vdir/$physical" 2>/dev/null || cp "$src" "$vdir/$physical"
      fi
      # update_versions marks a file <executable/> by its owner-x bit.
      case "${sources[$n]}" in gah-app|gah-agent) chmod 0755 "$vdir/$physical" ;; *) chmod 0644 "$vdir/$physical" ;; esac
      printf '    <file>\n        <physical_name>%s</physical_name>\n' "$physical"
      [ -z "$logical" ] || printf '        <logical_name>%s</logical_name>\n' "$logical"
      [ -z "$tags" ] || printf '        %s\n' "$tags"
      printf '    </file>\n'
    done
    echo "    <api_version>7.20.5</api_version>"
    echo "</version>"
  } > "$vdir/version.xml.tmp"
  mv "$vdir/version.xml.tmp" "$vdir/version.xml"
  echo "package-app-version: $vdir (server-sent; run the project's bin/update_versions)"
fi
echo "package-app-version: $out (app version $version_num, plan class $plan_class, guest $guest: ${image_names[*]})"
