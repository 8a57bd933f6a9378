#!/usr/bin/env python3
"""Kernel helpers for the test image (stdlib only; decompressors are the usual CLIs).

  kernel.py vmlinux BZIMAGE OUT
      Extract the uncompressed ELF kernel (PVH-bootable with CONFIG_PVH=y) from a bzImage.
      The compressed payload is located exactly through the x86 boot header
      (setup_sects @0x1f1, payload_offset/payload_length @0x248, boot protocol >= 2.08);
      a scan for compression magics is the fallback.

  kernel.py tsc-khz
      Print the host's TSC frequency in kHz, measured with RDTSC against CLOCK_MONOTONIC_RAW.
      Under TCG the guest's TSC is the host's, but the guest kernel cannot calibrate it on
      microvm (no PIT speaker gate, HPET or PM timer) and hangs: pass tsc_early_khz=<this>.

  kernel.py modorder MODDIR NAME...
      Print the module files (relative to MODDIR) needed for NAME..., dependencies first,
      skipping modules that are built in (modules.builtin). Dependencies are read from
      each module's .modinfo section ("depends=a,b"), so depmod is not needed.
"""
import lzma
import os
import shutil
import struct
import subprocess
import sys
import zlib

MAGICS = [  # (magic, format)
    (b"\x02\x21\x4c\x18", "lz4"),       # lz4 legacy frame (what Debian's cloud kernel uses)
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
    (b"\x89LZO", "lzo"),
]
TOOLS = {"lz4": ["lz4", "-dc"], "zstd": ["zstd", "-dcq"], "bzip2": ["bzip2", "-dc"],
         "lzo": ["lzop", "-dc"]}


def decompress(fmt, data):
    if fmt == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return d.decompress(data)  # trailing bytes (the size field) are ignored
    if fmt in ("xz", "lzma"):
        d = lzma.LZMADecompressor(lzma.FORMAT_XZ if fmt == "xz" else lzma.FORMAT_ALONE)
        return d.decompress(data)
    tool = TOOLS[fmt]
    if not shutil.which(tool[0]):
        sys.exit(f"kernel.py: {tool[0]} is needed to decompress this kernel")
    # The kernel appends its uncompressed size after the stream; the CLIs may complain
    # about it but still write the whole output, so judge by the ELF header below.
    p = subprocess.run(tool, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.stdout


def is_elf(b):
    return b[:4] == b"\x7fELF"


def vmlinux(bzimage, out):
    d = open(bzimage, "rb").read()
    candidates = []
    if d[0x202:0x206] == b"HdrS" and struct.unpack_from("<H", d, 0x206)[0] >= 0x208:
        setup_sects = d[0x1f1] or 4
        off, length = struct.unpack_from("<II", d, 0x248)
        start = (setup_sects + 1) * 512 + off
        payload = d[start:start + length]
        for magic, fmt in MAGICS:
            if payload.startswith(magic):
                candidates.append((fmt, payload))
                break
    if not candidates:  # fallback: scan for any known magic
        for magic, fmt in MAGICS:
            i = d.find(magic)
            while i >= 0 and len(candidates) < 20:
                candidates.append((fmt, d[i:]))
                i = d.find(magic, i + 1)
    for fmt, payload in candidates:
        try:
            elf = decompress(fmt, payload)
        except Exception:
            continue
        if is_elf(elf):
            tmp = out + ".tmp"
            with open(tmp, "wb") as f:
                f.write(elf)
            os.replace(tmp, out)
            print(f"kernel.py: {bzimage} -> {out} ({fmt}, {len(elf)} bytes)")
            return
    sys.exit(f"kernel.py: no decompressible ELF kernel found in {bzimage}")


def modinfo_depends(path):
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".zst"):
        data = subprocess.run(["zstd", "-dcq", path], stdout=subprocess.PIPE, check=True).stdout
    i = data.find(b"\x00depends=")
    if i < 0:
        return []
    j = data.index(b"\x00", i + 1)
    val = data[i + len(b"\x00depends="):j].decode()
    return [m for m in val.split(",") if m]


def modorder(moddir, names):
    index = {}
    for dirpath, _, files in os.walk(moddir):
        for fn in files:
            base = fn.split(".ko")[0] if ".ko" in fn else None
            if base:
                rel = os.path.relpath(os.path.join(dirpath, fn), moddir)
                index[base.replace("-", "_")] = rel
    builtin = set()
    bfile = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bfile):
        for line in open(bfile):
            builtin.add(os.path.basename(line.strip()).split(".ko")[0].replace("-", "_"))
    order, seen = [], set()

    def visit(name, chain):
        name = name.replace("-", "_")
        if name in seen:
            return
        if name in chain:
            sys.exit(f"kernel.py: dependency cycle at {name}")
        if name not in index:
            if name in builtin:
                seen.add(name)
                return
            sys.exit(f"kernel.py: module {name} neither found nor built in")
        for dep in modinfo_depends(os.path.join(moddir, index[name])):
            visit(dep, chain | {name})
        seen.add(name)
        order.append(index[name])

    for n in names:
        visit(n, frozenset())
    print("\n".join(order))


def tsc_khz():
    import ctypes
    import mmap
    import time
    # rdtsc; shl rdx, 32; or rax, rdx; ret
    code = b"\x0f\x31\x48\xc1\xe2\x20\x48\x09\xd0\xc3"
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
    best = []
    for _ in range(3):
        n0, t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW), rdtsc()
        time.sleep(0.1)
        n1, t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW), rdtsc()
        best.append((t1 - t0) * 1e6 / (n1 - n0))
    best.sort()
    print(int(round(best[1])))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "vmlinux":
        vmlinux(sys.argv[2], sys.argv[3])
    elif sys.argv[1:] == ["tsc-khz"]:
        tsc_khz()
    elif len(sys.argv) >= 3 and sys.argv[1] == "modorder":
        modorder(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
