#!/bin/bash
# Smoke test of the VM side of docs/GUEST.md with the image from build.sh:
#   boots it under qemu microvm (TCG, no NIC), runs a stub gah-agent from vdb, reads the
#   progress lines from the virtio-serial port, pauses/resumes the VM over QMP, reads the
#   output tar back from vdc; then checks Portage in a chroot of rootfs/ the way the
#   sandbox backend uses it (overlayfs over rootfs/, EPREFIX= set).
#
#   vm-images/test-image/boot-smoke.sh [IMAGEDIR]     (default: .cache/images/test)
#
# Environment: GAH_SMOKE_TIMEOUT (hard limit for one boot, s; default 180), GAH_SMOKE_SMP (2),
# GAH_SMOKE_MEM (1024, MiB), GAH_SMOKE_ACCEL (tcg), GAH_SMOKE_KEEP=1 keeps the work dir.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
IMG=$(cd "${1:-$TOP/.cache/images/test}" && pwd)
LIMIT=${GAH_SMOKE_TIMEOUT:-180}
SMP=${GAH_SMOKE_SMP:-2}
MEM=${GAH_SMOKE_MEM:-1024}
ACCEL=${GAH_SMOKE_ACCEL:-tcg}
PORT_NAME=org.gentoo-at-home.progress

fail() { echo "boot-smoke: FAIL: $*" >&2; [ -n "${T:-}" ] && [ -f "$T/console.log" ] && { echo "--- console (last 40 lines)"; tail -40 "$T/console.log"; } >&2; exit 1; }
for f in rootfs.ext4 vmlinux initramfs.cpio.gz; do [ -f "$IMG/$f" ] || fail "no $IMG/$f (run build.sh)"; done
need=()
for pair in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils socat:socat mkfs.ext4:e2fsprogs; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "missing: ${need[*]} (apt-get install them)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

T=$(mktemp -d /tmp/gah-boot-smoke.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${GAH_SMOKE_KEEP:-0}" = 1 ]; then echo "boot-smoke: work dir kept: $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }

# ---- the per-job disks ---------------------------------------------------------------
qemu-img create -q -f qcow2 -F raw -b "$IMG/rootfs.ext4" "$T/root.qcow2"
mkdir -p "$T/in/repo" "$T/in/distfiles" "$T/in/binpkgs" "$T/out"
cat >"$T/in/job.json" <<'EOF'
{"format": "gah-job-smoke", "id": "smoke-1", "note": "stub job of boot-smoke.sh"}
EOF
cat >"$T/in/gah-agent" <<'EOF'
#!/bin/sh
# stub gah-agent: checks its arguments, reports progress, leaves files in --out
set -e
while [ $# -gt 0 ]; do
  case "$1" in
    --job) JOB=$2; shift 2 ;; --out) OUT=$2; shift 2 ;; --progress) PROG=$2; shift 2 ;;
    *) echo "stub agent: bad argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$JOB" ] && [ -d "$OUT" ] && [ -n "$PROG" ]
t0=$(cut -d' ' -f1 /proc/uptime)
echo "GAH-PROGRESS 0.1 setup" >"$PROG"
mkdir -p "$OUT/logs" "$OUT/binpkgs"
{
  echo "uname: $(uname -r)"
  echo "uid: $(id -u)"
  echo "progress: $PROG -> $(readlink -f "$PROG")"
  echo "interfaces: $(ls /sys/class/net | tr '\n' ' ')"
  echo "cpus: $(nproc)"
  echo "mem_kib: $(awk '/MemTotal/{print $2}' /proc/meminfo)"
  echo "--- mounts"; cat /proc/mounts
  echo "--- block"; for b in /sys/block/vd*; do echo "${b##*/} $(cat $b/size) ro=$(cat $b/ro)"; done
} >"$OUT/logs/guest-info.txt" 2>&1
echo "GAH-PROGRESS 0.5 compile" >"$PROG"
sleep 2   # a window for the host's QMP stop/cont
emerge --version >"$OUT/logs/emerge-version.txt" 2>&1 || echo "emerge failed: $?" >>"$OUT/logs/emerge-version.txt"
echo "GAH-PROGRESS 0.9 package" >"$PROG"
cp "$JOB" "$OUT/job-copy.json"
t1=$(cut -d' ' -f1 /proc/uptime)
printf '{"status": "success", "agent_seconds": %s}\n' "$(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')" >"$OUT/outcome.json"
echo "GAH-PROGRESS 1 done" >"$PROG"
EOF
chmod 0755 "$T/in/gah-agent"
mkfs.ext4 -q -F -L gah-in -d "$T/in" "$T/in.ext4" 64M
truncate -s 256M "$T/out.raw"

# progress: qemu connects to the host's listening socket (the supervisor listens first)
socat -u UNIX-LISTEN:"$T/progress.sock" OPEN:"$T/progress.log",creat,append &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$T/progress.sock" ] && break; sleep 0.02; done

# ---- the VM --------------------------------------------------------------------------
APPEND="console=ttyS0 reboot=t panic=-1 root=/dev/vda rw quiet"
if [ "$ACCEL" = tcg ]; then
  # TCG: the guest's TSC is the host's, but on microvm the kernel cannot calibrate it and
  # hangs before /init; tell it the frequency (docs/GUEST.md).
  APPEND="$APPEND tsc_early_khz=$(python3 "$HERE/kernel.py" tsc-khz) tsc=reliable"
fi
CPU=max; [ "$ACCEL" = kvm ] && CPU=host
QEMU=(qemu-system-x86_64
  -machine microvm,acpi=on,rtc=on -accel "$ACCEL" -cpu "$CPU" -smp "$SMP" -m "$MEM"
  -nodefaults -no-user-config -nographic -no-reboot -nic none
  -kernel "$IMG/vmlinux" -initrd "$IMG/initramfs.cpio.gz"
  -append "$APPEND"
  -serial "file:$T/console.log"
  -qmp "unix:$T/qmp.sock,server=on,wait=off"
  -drive "id=root,if=none,file=$T/root.qcow2,format=qcow2,discard=unmap"
  -device virtio-blk-device,drive=root
  -drive "id=in,if=none,file=$T/in.ext4,format=raw,readonly=on"
  -device virtio-blk-device,drive=in
  -drive "id=out,if=none,file=$T/out.raw,format=raw"
  -device virtio-blk-device,drive=out
  -device virtio-serial-device,max_ports=2
  -chardev "socket,id=progress,path=$T/progress.sock"
  -device "virtserialport,chardev=progress,name=$PORT_NAME"
)
printf '%q ' "${QEMU[@]}" >"$T/qemu-cmdline.txt"; echo >>"$T/qemu-cmdline.txt"
echo "boot-smoke: $(cat "$T/qemu-cmdline.txt")"

qmp() {  # qmp CMD-JSON...: run commands after the capabilities handshake, print replies
  { echo '{"execute":"qmp_capabilities"}'; for c in "$@"; do echo "$c"; done; sleep 0.3; } \
    | socat -t 2 - UNIX-CONNECT:"$T/qmp.sock" | grep -v '"QMP"' | grep -v '^{"return": {}}$' || true
}

t_start=$(now)
timeout -k 5 "$LIMIT" "${QEMU[@]}" >"$T/qemu.out" 2>&1 &
QPID=$!
PIDS+=($QPID)
t_init=; t_agent=; t_done=; qmp_ok=no
while kill -0 "$QPID" 2>/dev/null; do
  if [ -z "$t_init" ] && grep -q 'gah-guest-init: running' "$T/console.log" 2>/dev/null; then t_init=$(now); fi
  if [ -z "$t_agent" ] && grep -q 'GAH-PROGRESS 0.5' "$T/progress.log" 2>/dev/null; then
    t_agent=$(now)
    # pause and resume through QMP while the agent sleeps
    a=$(now); r1=$(qmp '{"execute":"stop"}' '{"execute":"query-status"}'); b=$(now)
    r2=$(qmp '{"execute":"cont"}' '{"execute":"query-status"}'); c=$(now)
    echo "boot-smoke: QMP stop -> $(echo "$r1" | grep -o '"status": "[a-z-]*"' | head -1) ($(since "$a" "$b") s incl. socat)," \
         "cont -> $(echo "$r2" | grep -o '"status": "[a-z-]*"' | head -1) ($(since "$b" "$c") s)"
    echo "$r1" | grep -q '"status": "paused"' && echo "$r2" | grep -q '"status": "running"' && qmp_ok=yes
  fi
  if [ -z "$t_done" ] && grep -q 'gah-guest-init: agent exit' "$T/console.log" 2>/dev/null; then t_done=$(now); fi
  sleep 0.02
done
set +e; wait "$QPID"; qrc=$?; set -e
t_exit=$(now)

echo "boot-smoke: qemu exit status $qrc"
[ "$qrc" = 124 ] || [ "$qrc" = 137 ] && fail "hard timeout ($LIMIT s) hit"
[ "$qrc" = 0 ] || { cat "$T/qemu.out" >&2; fail "qemu exited with $qrc"; }
[ -n "$t_init" ] || fail "guest init never ran"
tar -xf "$T/out.raw" -C "$T/out" || fail "no tar on vdc"

echo "--- guest-info.txt"; cat "$T/out/logs/guest-info.txt"
echo "--- emerge --version in the VM"; cat "$T/out/logs/emerge-version.txt"
echo "--- progress"; cat "$T/progress.log"
grep -q '"status": "success"' "$T/out/outcome.json" || fail "no outcome.json from the stub agent"
cmp -s "$T/out/job-copy.json" "$T/in/job.json" || fail "job.json not passed through"
grep -qx 'GAH-PROGRESS 0.5 compile' "$T/progress.log" || fail "no progress line from the virtio port"
grep -qx 'GAH-PROGRESS 1 done' "$T/progress.log" || fail "progress incomplete"
grep -q '^interfaces: lo $' "$T/out/logs/guest-info.txt" || fail "guest has network interfaces besides lo"
grep -q ' /gah/in ext4 ro' "$T/out/logs/guest-info.txt" || fail "/gah/in is not the read-only vdb"
grep -q '^Portage 3' "$T/out/logs/emerge-version.txt" || fail "emerge --version failed in the VM"
[ "$qmp_ok" = yes ] || fail "QMP stop/cont did not report paused/running"

echo "boot-smoke: timings: qemu start -> guest init $(since "$t_start" "$t_init") s," \
     "-> agent at 0.5 $(since "$t_start" "$t_agent") s, -> agent done $(since "$t_start" "$t_done") s," \
     "-> qemu exit $(since "$t_start" "$t_exit") s; $(cat "$T/out/outcome.json")"
grep 'gah-guest-init:' "$T/console.log" | sed 's/^/  console: /'

# ---- the sandbox's view: overlayfs over rootfs/, Portage with EPREFIX= ---------------
if [ -d "$IMG/rootfs" ]; then
  mkdir -p "$T/ov/upper" "$T/ov/work" "$T/ov/root"
  a=$(now)
  unshare --mount --fork sh -ec '
    mount -t overlay overlay -o "lowerdir=$1/rootfs,upperdir=$2/ov/upper,workdir=$2/ov/work" "$2/ov/root"
    mount -t proc proc "$2/ov/root/proc"
    mount -t tmpfs tmpfs "$2/ov/root/tmp"
    chroot "$2/ov/root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 EPREFIX= sh -c "command -v gtar scanelf gcc clang make autoreconf runtest patch && emerge --version && emerge --info" ' sh "$IMG" "$T" \
    >"$T/chroot-emerge.txt" 2>&1 || { cat "$T/chroot-emerge.txt"; fail "emerge --version/--info in the chroot"; }
  b=$(now)
  echo "boot-smoke: chroot (overlayfs over rootfs/): $(grep -m1 '^Portage ' "$T/chroot-emerge.txt"); emerge --version + --info: $(wc -l <"$T/chroot-emerge.txt") lines of output in $(since "$a" "$b") s"
grep -q '^Portage 3' "$T/chroot-emerge.txt" || fail "emerge --version in the chroot"
  grep -E '^(ACCEPT_LICENSE|FEATURES|EPREFIX|PORTAGE_CONFIGROOT|ROOT)=' "$T/chroot-emerge.txt" | sed 's/^/  /' || true
fi
echo "boot-smoke: PASS"
