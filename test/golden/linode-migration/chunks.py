# xen-estate 0.1.0: LinodeMigration's chunk protocol, run by python3 on the source and on the dom0.
#
# A disk is cut into chunks of CHUNK bytes (the last may be shorter). Both ends hash chunks with SHA-256: the dom0
# hashes what its target already holds (only chunks its journal says landed), the source hashes what it has, and
# only chunks that are missing or differ cross the wire. Free blocks of an ext2/3/4 source are never read: they
# arrive as zeros, and a chunk of zeros is sent as a record without data.
#
# Stream (before zstd): MAGIC, then records HDR = kind, chunk index, length, sha256 of the chunk's bytes, one per
# chunk in the order of stripe_order (every chunk exactly once):
#   D  the chunk's bytes follow          Z  the chunk is zeros       S  the target already holds exactly this
#   E  end: index = number of chunks, digest = sha256 over every chunk's digest in index order
# Modes:
#   send DEVICE METHOD SIZE CHUNK       source: reads the target's hashes ("index hex" lines) on fd 3, streams to stdout
#   count                               dom0: copies stdin to stdout, reporting the bytes that came over the wire
#   receive TARGET SIZE CHUNK JOURNAL SOURCE_HASHES
#                                       dom0: writes what arrives (past its page cache where the device allows);
#                                       appends "index hex" to JOURNAL once it is on disk
#   hash TARGET SIZE CHUNK JOURNAL read|journal
#                                       dom0: prints "index hex" of what the target holds, for chunks in JOURNAL
#   verify TARGET SIZE CHUNK SOURCE_HASHES JOURNAL
#                                       dom0: reads the target back from the device and compares every chunk (a
#                                       chunk that differs leaves JOURNAL)
#   zero TARGET FROM                    dom0: zeroes the target from byte FROM to its end
# Messages go to stderr: "XE-PROGRESS phase position total data zero skip" once a second (position: the bytes handled
# so far), "XE-WIRE bytes", and a line starting "XE-" that says what failed. Needs Python 3.5+ and nothing outside its
# standard library.
import bisect
import ctypes
import errno
import hashlib
import json
import mmap
import os
import re
import signal
import struct
import subprocess
import sys
import time

HDR = struct.Struct(">cQI32s")
MAGIC = b"XEM2\n"
SYNC_BYTES = 256 << 20


def say(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def die(line):
    say(line)
    sys.exit(1)


def read_exact(f, n):
    b = f.read(n)
    if b is None or len(b) != n:
        die("XE-TRUNCATED the stream from the source ended early (the link dropped or the source failed)")
    return b


def pread_into(fd, mv, off, what):
    got = 0
    while got < len(mv):
        n = os.preadv(fd, [mv[got:]], off + got)
        if n <= 0:
            die("XE-SHORT %s ended at byte %d" % (what, off + got))
        got += n


def used_ranges(dev):
    """Byte ranges in use on the ext2/3/4 filesystem on dev (its block bitmaps, as dumpe2fs reads them), and its size."""
    out = subprocess.check_output(["dumpe2fs", dev], stderr=subprocess.DEVNULL).decode("utf-8", "replace")

    def field(name):
        m = re.search(r"^" + name + r":\s+(\S+)", out, re.M)
        if not m:
            die("XE-NOT-EXT dumpe2fs %s printed no %s" % (dev, name))
        return m.group(1)

    bs = int(field("Block size"))
    count = int(field("Block count"))
    first = int(field("First block"))
    isz = int(field("Inode size")) if re.search(r"^Inode size:", out, re.M) else 128
    feats = re.search(r"^Filesystem features:\s+(.*)$", out, re.M)
    csum = bool(feats) and ("uninit_bg" in feats.group(1).split() or "metadata_csum" in feats.group(1).split())
    free = []
    for g in re.split(r"^Group \d+: ", out, flags=re.M)[1:]:
        m = re.search(r"^  Free blocks: (.*)$", g, re.M)
        for part in (m.group(1).split(",") if m and m.group(1).strip() else []):
            a, _, b = part.strip().partition("-")
            free.append((int(a), int(b or a) + 1))
        # The tail of a group's inode table past its last used inode holds whatever the disk held before: unless the
        # kernel has zeroed it (ITABLE_ZEROED), it is not data, and it arrives as zeros like free blocks.
        t = re.search(r"Inode table at (\d+)-(\d+)", g)
        u = re.search(r"(\d+) unused inodes", g)
        if csum and t and u and "ITABLE_ZEROED" not in g.split("\n", 1)[0]:
            n = int(u.group(1)) * isz // bs
            end = int(t.group(2)) + 1
            if n > 0:
                free.append((max(int(t.group(1)), end - n), end))
    free.sort()
    used = [(0, first * bs)] if first > 0 else []
    at = first
    for a, b in free:
        if a > at:
            used.append((at * bs, a * bs))
        at = max(at, b)
    if at < count:
        used.append((at * bs, count * bs))
    return count * bs, used


def zeros_of(n, zero):
    return zero if n == len(zero) else bytes(n)


# How many evenly spaced runs of the disk a copy interleaves (see stripe_order).
STRIPES = 16


def stripe_count(count):
    """How many runs a disk of `count` chunks is sent in: STRIPES, or one per chunk for a smaller disk."""
    return max(1, min(STRIPES, count))


def stripe_order(count):
    """(run, chunk index) in the order the chunks are sent: STRIPES evenly spaced runs of the disk, a chunk of each in turn.
    A disk's regions differ: its system files compress several-fold and cost the CPU, its media and archives do not
    compress and cost the link. In disk order a copy is bound by the one and then by the other; interleaved, the
    compressor and the link work at once. Each run is read in order (a descriptor of its own keeps its readahead)."""
    k = stripe_count(count)
    per = (count + k - 1) // k
    for j in range(per):
        for s in range(k):
            idx = s * per + j
            if idx < count:
                yield s, idx


def send(dev, method, size, chunk):
    target = {}
    with os.fdopen(3, "r") as hf:
        for line in hf:
            p = line.split()
            if len(p) == 2:
                target[int(p[0])] = p[1]
    if method == "ext":
        fs_size, used = used_ranges(dev)
        if fs_size != size:
            die("XE-CHANGED the filesystem on %s is %d bytes now, not the %d planned" % (dev, fs_size, size))
    else:
        used = [(0, size)]
    big_pipe(1)
    out = sys.stdout.buffer
    zero = bytes(chunk)
    zmv = memoryview(zero)
    zdigest = hashlib.sha256(zero).digest()
    count = (size + chunk - 1) // chunk
    digests = [None] * count
    ends = [b for _, b in used]
    fds = [os.open(dev, os.O_RDONLY) for _ in range(stripe_count(count))]
    # One buffer for every chunk: only the parts a chunk's used ranges leave out are zeroed.
    buf = bytearray(chunk)
    mv = memoryview(buf)
    out.write(MAGIC)
    for stripe, idx in stripe_order(count):
        fd = fds[stripe]
        off = idx * chunk
        n = min(chunk, size - off)
        end = off + n
        # The first used range that ends past this chunk's start.
        j = bisect.bisect_right(ends, off)
        at = off
        while j < len(used) and used[j][0] < end:
            a = max(used[j][0], off)
            b = min(used[j][1], end)
            if a > at:
                mv[at - off:a - off] = zmv[:a - at]
            pread_into(fd, mv[a - off:b - off], a, dev)
            at = b
            j += 1
        if at == off:
            kind = b"Z"
        else:
            if at < end:
                mv[at - off:n] = zmv[:end - at]
            kind = b"Z" if mv[:n] == zmv[:n] else b"D"
        if kind == b"Z":
            digest = zdigest if n == chunk else hashlib.sha256(zmv[:n]).digest()
        else:
            digest = hashlib.sha256(mv[:n]).digest()
        digests[idx] = digest
        if target.get(idx) == digest.hex():
            out.write(HDR.pack(b"S", idx, n, digest))
        else:
            out.write(HDR.pack(kind, idx, n, digest))
            if kind == b"D":
                out.write(mv[:n])
    out.write(HDR.pack(b"E", count, 0, hashlib.sha256(b"".join(digests)).digest()))
    out.flush()


def big_pipe(fd):
    """Grows a pipe's buffer to 1 MiB (F_SETPIPE_SZ): fewer wake-ups for a stream of gigabytes. Not a pipe: no-op."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, 1 << 20)
    except (OSError, ImportError):
        pass


def count_wire():
    inp = sys.stdin.fileno()
    outp = sys.stdout.fileno()
    big_pipe(inp)
    big_pipe(outp)
    total = 0
    last = time.monotonic()
    splice = getattr(os, "splice", None)
    while True:
        if splice:
            try:
                n = splice(inp, outp, 1 << 20)
            except OSError:
                splice = None
                continue
        else:
            data = os.read(inp, 1 << 20)
            n = len(data)
            mv = memoryview(data)
            while mv:
                mv = mv[os.write(outp, mv):]
        if n == 0:
            break
        total += n
        now = time.monotonic()
        if now - last >= 1:
            last = now
            say("XE-WIRE %d" % total)
    say("XE-WIRE %d" % total)


libc = ctypes.CDLL(None, use_errno=True)
try:
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
except AttributeError:
    libc = None


def zero_range(fd, off, n, zero):
    # FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE: the device (BLKZEROOUT) or filesystem zeroes the range itself.
    if libc is None or libc.fallocate(fd, 0x10 | 0x01, off, n) != 0:
        os.pwrite(fd, zeros_of(n, zero), off)


def progress(phase, pos, size, stats):
    say("XE-PROGRESS %s %d %d %d %d %d" % (phase, pos, size, stats["data"], stats["zero"], stats["skip"]))


class Journal(object):
    """Chunks that landed, appended to the journal once the target has them on disk: a thread makes the target
    durable (fdatasync) and then records what was written before, while the stream goes on arriving."""

    def __init__(self, fd, path):
        import threading

        self.fd = fd
        self.f = open(path, "a")
        self.pending = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop = False
        self.error = None
        self.thread = threading.Thread(target=self.run)
        self.thread.daemon = True
        self.thread.start()

    def add(self, line):
        with self.lock:
            self.pending.append(line)

    def flush(self):
        with self.lock:
            lines, self.pending = self.pending, []
        # Every line taken was added after its chunk's write returned: this sync covers them all.
        os.fdatasync(self.fd)
        if lines:
            self.f.write("".join(lines))
            self.f.flush()
            os.fsync(self.f.fileno())

    def run(self):
        try:
            while not self.stop:
                self.wake.wait(1)
                self.wake.clear()
                if not self.stop:
                    self.flush()
        except Exception as e:
            self.error = e

    def close(self):
        self.stop = True
        self.wake.set()
        self.thread.join()
        if self.error:
            raise self.error
        self.flush()


# Direct writes move whole blocks of this size, from page-aligned memory, at aligned offsets (every chunk starts at a
# multiple of it): 4096 covers devices whose logical blocks are 512 or 4096 bytes.
DIRECT_ALIGN = 4096


class Target(object):
    """The target opened for writing: through the page cache, and also with O_DIRECT where the device takes it.
    Direct writes skip the dom0's page cache: a guest's gigabytes would otherwise evict what the dom0 itself runs on,
    and copying them through the cache costs the receiver most of its CPU. A write the device refuses direct (EINVAL)
    and a piece not a whole number of blocks go through the cache; fdatasync on either descriptor makes both
    durable (one block device)."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY)
        try:
            self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
        except (OSError, AttributeError):
            self.direct = None

    def write(self, data, off):
        n = len(data)
        w = 0
        while w < n:
            if self.direct is not None and w % DIRECT_ALIGN == 0 and (n - w) % DIRECT_ALIGN == 0:
                try:
                    w += os.pwrite(self.direct, data[w:], off + w)
                    continue
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    os.close(self.direct)
                    self.direct = None
            w += os.pwrite(self.fd, data[w:], off + w)


def stopped(signum, frame):
    die("XE-STOPPED the copy was stopped by signal %d; what landed is kept" % signum)


def read_into(f, mv):
    got = 0
    while got < len(mv):
        n = f.readinto(mv[got:])
        if not n:
            die("XE-TRUNCATED the stream from the source ended early (the link dropped or the source failed)")
        got += n


def receive(target, size, chunk, journal, hashes_out):
    big_pipe(0)
    inp = sys.stdin.buffer
    tgt = Target(target)
    fd = tgt.fd
    jr = Journal(fd, journal)
    hf = open(hashes_out + ".part", "w")
    zero = bytes(chunk)
    # Page-aligned (an anonymous map), as a direct write needs.
    buf = mmap.mmap(-1, chunk)
    mv = memoryview(buf)
    hdr = bytearray(HDR.size)
    count = (size + chunk - 1) // chunk
    if inp.read(len(MAGIC)) != MAGIC:
        die("XE-BAD-STREAM the stream from the source does not start with the protocol's magic")
    digests = [None] * count
    unsynced = 0
    last = time.monotonic()
    stats = {"data": 0, "zero": 0, "skip": 0}
    arrived = 0
    pos = 0
    # A signal that ends the copy (the session hung up, the dom0 stops it) ends it as an error does, below.
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, stopped)
    try:
        while True:
            read_into(inp, memoryview(hdr))
            kind, idx, n, digest = HDR.unpack(hdr)
            if kind == b"E":
                break
            if idx >= count or digests[idx] is not None or n != min(chunk, size - idx * chunk):
                die("XE-BAD-STREAM chunk %d (%d bytes) arrived: not a chunk of this %d-byte disk that is still missing" % (idx, n, size))
            digests[idx] = digest
            arrived += 1
            off = idx * chunk
            if kind == b"D":
                data = mv[:n]
                read_into(inp, data)
                got = hashlib.sha256(data).digest()
                if got != digest:
                    die("XE-MISMATCH chunk %d (bytes %d-%d): the source sent sha256 %s, %s arrived" % (idx, off, off + n, digest.hex(), got.hex()))
                tgt.write(data, off)
                stats["data"] += n
            elif kind == b"Z":
                zero_range(fd, off, n, zero)
                stats["zero"] += n
            elif kind == b"S":
                stats["skip"] += n
            else:
                die("XE-BAD-STREAM unknown record %r at chunk %d" % (kind, idx))
            if kind != b"S":
                unsynced += n
                jr.add("%d %s\n" % (idx, digest.hex()))
            hf.write("%d %s\n" % (idx, digest.hex()))
            pos += n
            if unsynced >= SYNC_BYTES:
                # Start the target's writeback now rather than leaving gigabytes dirty for the journal's next sync.
                jr.wake.set()
                unsynced = 0
            now = time.monotonic()
            if now - last >= 1:
                last = now
                progress("copy", pos, size, stats)
        if idx != count or arrived != count:
            die("XE-BAD-STREAM the stream ended after %d of %d chunks" % (arrived, count))
        if digest != hashlib.sha256(b"".join(digests)).digest():
            die("XE-MISMATCH the source's hash over all chunks differs from the hash over what arrived")
    except BaseException:
        # The stream broke off or brought a bad chunk: every chunk written before it was checked and is on the
        # target, so record it; the next run sends only the rest. (The journal's own sync is once a second.)
        try:
            jr.close()
        except Exception:
            pass
        raise
    jr.close()
    hf.close()
    os.rename(hashes_out + ".part", hashes_out)
    progress("copy", pos, size, stats)
    print("XE-RESULT " + json.dumps(dict(stats, root=digest.hex())))


def read_chunks(target, size, chunk, wanted, phase):
    """Yields (index, digest hex) of the target's chunks in `wanted` (None: all), read from the device itself."""
    fd = os.open(target, os.O_RDONLY)
    # What this host wrote may still sit in its page cache: drop it, so the bytes compared come from the device.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    zero = bytes(chunk)
    zdigest = hashlib.sha256(zero).hexdigest()
    count = (size + chunk - 1) // chunk
    buf = bytearray(chunk)
    last = time.monotonic()
    stats = {"data": 0, "zero": 0, "skip": 0}
    for idx in range(count):
        if wanted is not None and idx not in wanted:
            stats["skip"] += min(chunk, size - idx * chunk)
            continue
        off = idx * chunk
        n = min(chunk, size - off)
        mv = memoryview(buf)[:n]
        pread_into(fd, mv, off, target)
        if n == chunk and mv == zero:
            stats["zero"] += n
            yield idx, zdigest
        else:
            stats["data"] += n
            yield idx, hashlib.sha256(mv).hexdigest()
        now = time.monotonic()
        if now - last >= 1:
            last = now
            progress(phase, off + n, size, stats)
    progress(phase, size, size, stats)


def journal_of(path):
    landed = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 2:
                    landed[int(p[0])] = p[1]
    return landed


def hash_target(target, size, chunk, journal, how):
    """The target's hashes for the chunks the journal says landed: read from the device (`read`), or as the journal
    recorded them when they were written (`journal`: fast; the verification after the copy reads everything back and
    takes a chunk that differs out of the journal, so the next run sends it again)."""
    landed = journal_of(journal)
    out = sys.stdout
    if how == "journal":
        count = (size + chunk - 1) // chunk
        for idx in sorted(landed):
            if idx < count:
                out.write("%d %s\n" % (idx, landed[idx]))
    else:
        for idx, hexd in read_chunks(target, size, chunk, set(landed), "hash"):
            out.write("%d %s\n" % (idx, hexd))
    out.flush()


def verify(target, size, chunk, hashes, journal):
    want = journal_of(hashes)
    count = (size + chunk - 1) // chunk
    if len(want) != count:
        die("XE-NO-HASHES the source's hashes list %d of %d chunks: copy again" % (len(want), count))
    bad = []
    for idx, hexd in read_chunks(target, size, chunk, None, "verify"):
        if hexd != want[idx]:
            bad.append((idx, hexd))
    if bad:
        # What the target holds there is not what was sent: the journal must not say those chunks landed.
        wrong = set(i for i, _ in bad)
        landed = journal_of(journal)
        with open(journal + ".new", "w") as f:
            for i in sorted(landed):
                if i not in wrong:
                    f.write("%d %s\n" % (i, landed[i]))
            f.flush()
            os.fsync(f.fileno())
        os.rename(journal + ".new", journal)
        idx, hexd = bad[0]
        off = idx * chunk
        die("XE-MISMATCH chunk %d (bytes %d-%d) of the target holds sha256 %s, the source sent %s (%d chunk(s) differ)" % (idx, off, min(off + chunk, size), hexd, want[idx], len(bad)))
    print("XE-VERIFIED %d" % count)


def zero_tail(target, start):
    fd = os.open(target, os.O_WRONLY)
    end = os.lseek(fd, 0, os.SEEK_END)
    step = 64 << 20
    zero = bytes(step)
    stats = {"data": 0, "zero": 0, "skip": 0}
    last = time.monotonic()
    at = start
    while at < end:
        n = min(step, end - at)
        zero_range(fd, at, n, zero)
        at += n
        stats["zero"] += n
        now = time.monotonic()
        if now - last >= 1:
            last = now
            progress("zero", at - start, end - start, stats)
    os.fsync(fd)
    progress("zero", end - start, end - start, stats)


def main():
    a = sys.argv[1:]
    if a[0] == "send":
        send(a[1], a[2], int(a[3]), int(a[4]))
    elif a[0] == "count":
        count_wire()
    elif a[0] == "receive":
        receive(a[1], int(a[2]), int(a[3]), a[4], a[5])
    elif a[0] == "hash":
        hash_target(a[1], int(a[2]), int(a[3]), a[4], a[5])
    elif a[0] == "verify":
        verify(a[1], int(a[2]), int(a[3]), a[4], a[5])
    elif a[0] == "zero":
        zero_tail(a[1], int(a[2]))
    else:
        die("XE-USAGE unknown mode %s" % a[0])


main()
