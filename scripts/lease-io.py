#!/usr/bin/env python3
"""Count the host lease files' I/O on a lab SR for a while, with inotify
(docs/benchmarks.md, "Failover with VM leases"): per host lease file, how
many times it was replaced (renamed into place), its temporary file
written, and the file opened for reading.

Usage: scripts/lease-io.py SR_DIR SECONDS   (SR_DIR: a lab's DIR/sr)"""
import ctypes, os, struct, sys, time, select, collections
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_OPEN, IN_MOVED_TO, IN_CLOSE_WRITE, IN_ACCESS = 0x20, 0x80, 0x08, 0x01
if len(sys.argv) != 3:
    sys.exit("usage: lease-io.py SR_DIR SECONDS")
sr, secs = sys.argv[1], float(sys.argv[2])
d = os.path.join(sr, "pool-ha-leases", "hosts")
if not os.path.isdir(d):
    sys.exit(f"{d} does not exist: is HA on in that lab (leases live on its heartbeat SR)?")
fd = libc.inotify_init1(os.O_NONBLOCK)
wd = libc.inotify_add_watch(fd, d.encode(), IN_OPEN | IN_MOVED_TO | IN_CLOSE_WRITE)
if wd < 0:
    sys.exit(f"cannot watch {d}: {os.strerror(ctypes.get_errno())}")
counts = collections.Counter()
end = time.time() + secs
while time.time() < end:
    r, _, _ = select.select([fd], [], [], 0.5)
    if not r:
        continue
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        _, mask, _, ln = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + ln].rstrip(b"\0").decode()
        i += 16 + ln
        if mask & IN_MOVED_TO and name.endswith(".lease"):
            counts[(name, "replaced")] += 1
        elif mask & IN_OPEN and name.endswith(".lease"):
            counts[(name, "opened")] += 1
        elif mask & IN_CLOSE_WRITE and name.endswith(".tmp"):
            counts[(name, "tmp written")] += 1
for k in sorted(counts):
    print(f"{k[0]:50s} {k[1]:12s} {counts[k]:6d}  {counts[k]/secs:6.2f}/s")
