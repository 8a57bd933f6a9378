#!/usr/bin/env python3
"""Kernel surfaces a build never needs, each probed harmlessly: arguments are chosen so that a
call the kernel permits fails on a later check (EINVAL) or does nothing lasting."""
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 numbers.
SYS = {"kexec_load": 246, "init_module": 175, "reboot": 169, "add_key": 248, "bpf": 321,
       "perf_event_open": 298, "ptrace": 101, "keyctl": 250, "unshare": 272}


def report(name, rc, what):
    err = ctypes.get_errno()
    if rc >= 0:
        print(f"GAH-HOSTILE sys.{name} allowed rc={rc} {what}", flush=True)
    elif err == 1:  # EPERM: refused before doing anything
        print(f"GAH-HOSTILE sys.{name} denied {os.strerror(err)} {what}", flush=True)
    elif name in ("kexec_load", "init_module", "reboot") and err in (22, 8, 14):
        # Past the permission check: only the deliberately bad argument stopped it.
        print(f"GAH-HOSTILE sys.{name} allowed permitted, then {os.strerror(err)} {what}", flush=True)
    else:
        print(f"GAH-HOSTILE sys.{name} denied {os.strerror(err)} {what}", flush=True)


def call(name, *args):
    ctypes.set_errno(0)
    return libc.syscall(SYS[name], *args)


# kexec_load with 0xffff segments (> KEXEC_SEGMENT_MAX): EPERM unless permitted, then EINVAL.
report("kexec_load", call("kexec_load", ctypes.c_ulong(0), ctypes.c_ulong(0xFFFF), None, ctypes.c_ulong(0)), "(nr_segments too large)")
# init_module of an empty image: EPERM unless permitted, then ENOEXEC/EINVAL/EFAULT.
report("init_module", call("init_module", None, ctypes.c_ulong(0), b""), "(empty module)")
# reboot with bad magic: EPERM unless CAP_SYS_BOOT, then EINVAL.
report("reboot", call("reboot", 0, 0, 0, None), "(bad magic)")
# add_key to the process keyring (gone with the process).
report("add_key", call("add_key", b"user", b"gah-hostile", b"x", ctypes.c_size_t(1), ctypes.c_int(-2)), "(user key, process keyring)")
# bpf: a one-entry array map.
attr = (ctypes.c_uint32 * 32)()
attr[0], attr[1], attr[2], attr[3] = 2, 4, 4, 1
report("bpf", call("bpf", 0, ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr))), "(BPF_MAP_CREATE array)")
# perf_event_open: software CPU clock of this process, user space only.
pattr = (ctypes.c_uint64 * 16)()
pattr[0] = 1 | (112 << 32)  # type PERF_TYPE_SOFTWARE, size PERF_ATTR_SIZE_VER5
pattr[1] = 0  # PERF_COUNT_SW_CPU_CLOCK
pattr[5] = 1 | 32 | 64  # disabled, exclude_kernel, exclude_hv
report("perf_event_open", call("perf_event_open", ctypes.byref(pattr), 0, -1, -1, ctypes.c_ulong(0)), "(sw cpu clock, self)")
# ptrace: seize PID 1 (no stop), then detach.
rc = call("ptrace", ctypes.c_long(0x4206), ctypes.c_long(1), None, None)
report("ptrace-pid1", rc, "(PTRACE_SEIZE 1)")
if rc >= 0:
    call("ptrace", ctypes.c_long(17), ctypes.c_long(1), None, None)
