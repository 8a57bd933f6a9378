# Sourced by gah-guest-init (production image) after /gah/in is mounted, before the agent.
# Brings up the VM's only link (qemu user network, restrict=on: it reaches nothing but the
# supervisor's guestfwd endpoints) and mounts the CernVM-FS repository without autofs.
# NOT RUN HERE (see README.md).
GAH_CVMFS_FQRN=$(. /etc/cvmfs/default.local; echo "$CVMFS_REPOSITORIES" | cut -d, -f1)
if [ -e /sys/class/net/eth0 ]; then
  modprobe fuse 2>/dev/null || true
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0          # qemu user-network defaults
  ip route add default via 10.0.2.2 dev eth0
  # The host may stage the proxy list it computed from the BOINC client's settings.
  if [ -s /gah/in/cvmfs-proxy ]; then
    printf 'CVMFS_HTTP_PROXY="%s"\n' "$(head -1 /gah/in/cvmfs-proxy)" >"/etc/cvmfs/config.d/$GAH_CVMFS_FQRN.local"
  fi
  mkdir -p /var/lib/cvmfs "/cvmfs/$GAH_CVMFS_FQRN"
  # optional persistent cache disk (vdd, see README.md); else the cache lives in the overlay
  [ -b /dev/vdd ] && mount -t ext4 /dev/vdd /var/lib/cvmfs && chown cvmfs:cvmfs /var/lib/cvmfs
  if mount -t cvmfs "$GAH_CVMFS_FQRN" "/cvmfs/$GAH_CVMFS_FQRN"; then
    say "cvmfs: $GAH_CVMFS_FQRN mounted (revision $(attr -qg revision "/cvmfs/$GAH_CVMFS_FQRN" 2>/dev/null || echo ?))"
  else
    say "WARNING: cvmfs: mounting $GAH_CVMFS_FQRN failed"
  fi
else
  say "no eth0: running without cvmfs"
fi
