#!/bin/bash
# hostile/escape: tries every non-resource way out of the guest. One line per attempt:
#   GAH-HOSTILE <attempt> allowed|denied|info <detail>
# "allowed" only says the guest-side call succeeded; whether that touched the host is for the
# test on the host to judge (tests/tests/hostile.rs).
PORT=47613
SECRET=/var/tmp/gah-hostile-secret
SH=$(command -v sh)

oneline() { head -c "${1:-300}" | tr '\n\0' '  '; }
try() {
	local id=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "GAH-HOSTILE $id allowed $(printf '%s' "$out" | oneline)"
	else
		echo "GAH-HOSTILE $id denied rc=$rc $(printf '%s' "$out" | oneline)"
	fi
}
info() {
	local id=$1
	shift
	echo "GAH-HOSTILE $id info $("$@" 2>&1 | oneline "${LIMIT:-2000}")"
}
py() { python3 -c "$1"; }

echo "### hostile/escape: who am I"
info id id
info uid_map cat /proc/self/uid_map
info gid_map cat /proc/self/gid_map
info status grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status
info hostname hostname

echo "### network"
try net.tcp-host py "import socket; s=socket.create_connection(('127.0.0.1', $PORT), timeout=3); s.sendall(b'gah-hostile-hello')"
try net.tcp6-host py "import socket; s=socket.create_connection(('::1', $PORT), timeout=3); s.sendall(b'gah-hostile-hello')"
try net.tcp-qemu-gateway py "import socket; s=socket.create_connection(('10.0.2.2', $PORT), timeout=3); s.sendall(b'gah-hostile-hello')"
try net.dns getent hosts example.org
try net.abstract py "import socket; s=socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect('\0gah-hostile-$PORT'); s.sendall(b'gah-hostile-hello')"
info net.links cat /proc/net/dev

echo "### host files"
try file.secret cat "$SECRET"
try file.secret-via-proc1 cat "/proc/1/root$SECRET"
try file.boinc-client ls -la /var/lib/boinc-client
try file.boinc ls -la /var/lib/boinc
try file.boinc-auth cat /var/lib/boinc/gui_rpc_auth.cfg
try file.shadow head -c 200 /etc/shadow

echo "### read-only inputs"
for d in /gah/in /gah/in/repo /gah/in/distfiles /gah/in/binpkgs; do
	n=${d//\//_}
	try "input.write$n" touch "$d/gah-hostile-was-here"
	try "input.remount-rw$n" mount -o remount,rw,bind "$d"
	try "input.write-after-remount$n" touch "$d/gah-hostile-was-here"
	victim=$(find "$d" -maxdepth 3 -type f 2>/dev/null | head -n1)
	[ -n "$victim" ] && try "input.chmod-suid$n" chmod 4755 "$victim"
	[ -n "$victim" ] && try "input.append$n" sh -c "echo gah-hostile-was-here >> '$victim'"
	try "input.suid-copy$n" sh -c "cp $SH '$d/gah-hostile-suid' && chmod 4755 '$d/gah-hostile-suid'"
done

echo "### setuid files in the outputs and the image"
try out.suid sh -c "cp $SH /gah/out/gah-hostile-suid && chmod 4755 /gah/out/gah-hostile-suid"
try out.sgid sh -c "cp $SH /gah/out/gah-hostile-sgid && chmod 2755 /gah/out/gah-hostile-sgid"
pkgs=/gah/out/binpkgs/hostile/escape
mkdir -p "$pkgs"
try out.binpkgs-suid sh -c "cp $SH $pkgs/suid-1-1.gpkg.tar && chmod 4755 $pkgs/suid-1-1.gpkg.tar"
try image.suid sh -c "cp $SH /usr/local/bin/gah-hostile-suid && chmod 4755 /usr/local/bin/gah-hostile-suid"

echo "### links and odd files in the outputs"
try out.symlink-emerge-info sh -c "rm -f /gah/out/emerge-info.txt && ln -s $SECRET /gah/out/emerge-info.txt"
try out.binpkgs-symlink ln -sf "$SECRET" "$pkgs/evil-1-1.gpkg.tar"
real=$(ls "$pkgs"/escape-1-*.gpkg.tar 2>/dev/null | head -n1)
try out.binpkgs-hardlink ln -f "${real:-/gah/out/emerge-info.txt}" "$pkgs/twin-1-1.gpkg.tar"
try out.binpkgs-index-symlink sh -c "rm -f /gah/out/binpkgs/Packages && ln -s $SECRET /gah/out/binpkgs/Packages"
try out.binpkgs-dir-symlink ln -sfn /var/lib/boinc /gah/out/binpkgs/app-misc
try out.fifo mkfifo /gah/out/binpkgs/hostile/escape/fifo-1-1.gpkg.tar

echo "### kernel knobs"
try proc.swappiness sh -c 'echo 37 > /proc/sys/vm/swappiness'
try proc.core_pattern sh -c 'echo core.gah-hostile > /proc/sys/kernel/core_pattern'
try proc.hostname sh -c 'echo gah-hostile-host > /proc/sys/kernel/hostname'
# h = help: a harmless command, it only prints to the kernel log.
try proc.sysrq-trigger sh -c 'echo h > /proc/sysrq-trigger'
try mount.tmpfs sh -c 'mkdir -p /tmp/gah-m && mount -t tmpfs none /tmp/gah-m && umount /tmp/gah-m'
try mount.proc sh -c 'mkdir -p /tmp/gah-p && mount -t proc proc /tmp/gah-p && umount /tmp/gah-p'
try mount.sysfs sh -c 'mkdir -p /tmp/gah-s && mount -t sysfs sysfs /tmp/gah-s && ls /tmp/gah-s/kernel >/dev/null && umount /tmp/gah-s'
try mount.cgroup2 sh -c 'mkdir -p /tmp/gah-c && mount -t cgroup2 none /tmp/gah-c && umount /tmp/gah-c'
try mount.debugfs sh -c 'mkdir -p /tmp/gah-d && mount -t debugfs none /tmp/gah-d && umount /tmp/gah-d'
try ns.unshare-user unshare -U -r true
try ns.unshare-mount unshare -m true
try ns.nsenter-pid1 nsenter -t 1 -a true
try dev.mknod-null sh -c 'mknod /tmp/gah-hostile-null c 1 3 && echo x > /tmp/gah-hostile-null'
disk=$(awk 'NR > 2 && $4 !~ /[0-9]$/ { print $1, $2; exit }' /proc/partitions)
[ -n "$disk" ] && try dev.mknod-disk sh -c "mknod /tmp/gah-hostile-disk b $disk && head -c 512 /tmp/gah-hostile-disk | wc -c"
python3 /usr/libexec/gah-hostile/syscalls.py 2>&1

echo "### what the guest sees of the host"
LIMIT=20000 info env.self env
LIMIT=20000 info env.pid1 cat /proc/1/environ
for p in /proc/[0-9]*; do
	[ -r "$p/environ" ] && echo "GAH-HOSTILE env.proc-${p#/proc/} info $(tr '\0' ' ' < "$p/environ" 2>/dev/null | head -c 4000)"
done
LIMIT=20000 info mountinfo cat /proc/self/mountinfo
LIMIT=4000 info cgroup cat /proc/self/cgroup
LIMIT=4000 info partitions cat /proc/partitions

echo "### taking the inputs away (last: it breaks the build's view)"
for d in /gah/in/binpkgs /gah/in/distfiles /gah/in/repo /gah/in; do
	n=${d//\//_}
	try "input.umount$n" umount -l "$d"
	LIMIT=500 info "input.beneath$n" ls -la "$d"
done
echo "### hostile/escape: done"
exit 0
