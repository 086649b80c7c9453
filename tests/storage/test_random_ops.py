# SPDX-License-Identifier: Apache-2.0
"""fsx-style comparison: one seeded random sequence of file system operations
applied to the FUSE mount and to a native directory on the same file system,
every result compared op by op, then the final trees.

The seed is printed; MSB_TEST_SEED=N replays a run, MSB_TEST_OPS=N changes
its length (defaults below keep a run well under a minute on two cores).

What is compared: each call's return value or errno, data read, sorted
directory listings, file type, permission bits, size (not for directories),
link count, owner, symlink text, user xattrs, and the mtime of an inode the
sequence set one on, for as long as the native side still shows that value.
What is not: atime, ctime, inode numbers, st_blocks, directory sizes; and
SEEK_DATA/SEEK_HOLE answers are checked for being true, not for being equal
(see lseek_valid).
"""
import ctypes
import errno
import os
import random
import stat
import subprocess
import sys
import threading

import fusetest

# Setting these would need a separate test of their own (identity, escape).
PERM_MASK = 0o777
NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g']
XATTRS = ['user.one', 'user.two', 'user.three']
MAX_DEPTH = 3
MAX_HANDLES = 8
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x1, 0x2, 0x10
# How often each operation comes up.
OP_WEIGHTS = [('create', 8), ('open', 5), ('close', 5), ('pwrite', 10), ('append', 3),
              ('pread', 6), ('read_path', 3), ('ftruncate', 3), ('truncate', 2), ('fsync', 1),
              ('fallocate', 2), ('fallocate_mode', 2), ('lseek', 2), ('fstat', 2), ('mkdir', 5),
              ('rmdir', 3), ('unlink', 4), ('rename', 5), ('rename2', 2), ('copy_range', 2),
              ('link', 2), ('symlink', 2), ('readlink', 2), ('chmod', 3), ('utime', 3),
              ('stat', 5), ('lstat', 3), ('listdir', 4), ('setxattr', 2), ('getxattr', 2),
              ('listxattr', 1), ('removexattr', 1)]
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def _check(rc):
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Res:
    """One call's outcome, comparable across the two worlds."""

    def __init__(self, ok, value):
        self.ok, self.value = ok, value

    def __eq__(self, other):
        return (self.ok, self.value) == (other.ok, other.value)

    def __repr__(self):
        if not self.ok:
            return 'error %s' % fusetest.errname(self.value)
        v = self.value
        if isinstance(v, bytes) and len(v) > 48:
            v = '<%d bytes %r...>' % (len(v), v[:16])
        return 'ok %r' % (v,)


class World:
    """One side of the comparison: a root directory and its open handles."""

    def __init__(self, name, root):
        self.name, self.root = name, root
        self.handles = {}  # handle id -> fd

    def p(self, rel):
        return os.path.join(self.root, rel) if rel else self.root

    def close_all(self):
        for fd in self.handles.values():
            os.close(fd)
        self.handles.clear()


def attrs(st, mtime):
    t = stat.S_IFMT(st.st_mode)
    out = {'type': t, 'perm': stat.S_IMODE(st.st_mode), 'nlink': st.st_nlink,
           'uid': st.st_uid, 'gid': st.st_gid}
    if t != stat.S_IFDIR:
        out['size'] = st.st_size
    if mtime:
        out['mtime'] = st.st_mtime_ns
    return out


class Ops:
    """The operations; each takes (world, *args) and returns a value."""

    @staticmethod
    def open(w, h, path, flags, mode):
        fd = os.open(w.p(path), flags, mode)
        if h is None:
            os.close(fd)
        else:
            w.handles[h] = fd
        return None

    @staticmethod
    def close(w, h):
        os.close(w.handles.pop(h))

    @staticmethod
    def pwrite(w, h, data, off):
        return os.pwrite(w.handles[h], data, off)

    @staticmethod
    def write(w, h, data):
        return os.write(w.handles[h], data)

    @staticmethod
    def pread(w, h, size, off):
        return os.pread(w.handles[h], size, off)

    @staticmethod
    def read_path(w, path):
        with open(w.p(path), 'rb') as f:
            return f.read()

    @staticmethod
    def ftruncate(w, h, size):
        os.ftruncate(w.handles[h], size)

    @staticmethod
    def truncate(w, path, size):
        os.truncate(w.p(path), size)

    @staticmethod
    def fsync(w, h):
        os.fsync(w.handles[h])

    @staticmethod
    def fallocate(w, h, off, length):
        os.posix_fallocate(w.handles[h], off, length)

    @staticmethod
    def lseek(w, h, off, whence):
        # The position is put back: plain write() must go on at the same
        # place in both worlds, whatever the answers were.
        fd = w.handles[h]
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            return os.lseek(fd, off, whence)
        finally:
            os.lseek(fd, pos, os.SEEK_SET)

    @staticmethod
    def fstat(w, h, mtime):
        return attrs(os.fstat(w.handles[h]), mtime)

    @staticmethod
    def mkdir(w, path, mode):
        os.mkdir(w.p(path), mode)

    @staticmethod
    def rmdir(w, path):
        os.rmdir(w.p(path))

    @staticmethod
    def unlink(w, path):
        os.unlink(w.p(path))

    @staticmethod
    def rename(w, src, dst):
        os.rename(w.p(src), w.p(dst))

    @staticmethod
    def rename2(w, src, dst, flags):
        _check(_libc.renameat2(AT_FDCWD, os.fsencode(w.p(src)), AT_FDCWD, os.fsencode(w.p(dst)),
                               flags))

    @staticmethod
    def fallocate_mode(w, h, mode, off, length):
        _check(_libc.fallocate(w.handles[h], mode, off, length))

    @staticmethod
    def copy_range(w, hs, hd, count, off_src, off_dst):
        return os.copy_file_range(w.handles[hs], w.handles[hd], count, off_src, off_dst)

    @staticmethod
    def link(w, src, dst):
        os.link(w.p(src), w.p(dst))

    @staticmethod
    def symlink(w, target, path):
        os.symlink(target, w.p(path))

    @staticmethod
    def readlink(w, path):
        return os.readlink(w.p(path))

    @staticmethod
    def chmod(w, path, mode):
        os.chmod(w.p(path), mode)

    @staticmethod
    def utime(w, path, ns):
        os.utime(w.p(path), ns=ns)

    @staticmethod
    def stat(w, path, mtime):
        return attrs(os.stat(w.p(path)), mtime)

    @staticmethod
    def lstat(w, path, mtime):
        return attrs(os.lstat(w.p(path)), mtime)

    @staticmethod
    def listdir(w, path):
        return sorted(os.listdir(w.p(path)))

    @staticmethod
    def setxattr(w, path, name, value, flags):
        os.setxattr(w.p(path), name, value, flags)

    @staticmethod
    def getxattr(w, path, name):
        return os.getxattr(w.p(path), name)

    @staticmethod
    def listxattr(w, path):
        return sorted(n for n in os.listxattr(w.p(path)) if n.startswith('user.'))

    @staticmethod
    def removexattr(w, path, name):
        os.removexattr(w.p(path), name)


def run(w, op, args):
    try:
        return Res(True, getattr(Ops, op)(w, *args))
    except OSError as e:
        return Res(False, e.errno)


class Generator:
    """Picks the next operation from the native tree's current state."""

    def __init__(self, rnd, native):
        self.r = rnd
        self.native = native
        self.next_handle = 0
        self.handle_ino = {}  # handle id -> native inode
        self.handle_reg = set()  # handles on regular files
        # native inode -> the mtime the sequence set on it.  Compared while the
        # native inode still shows that value: no bookkeeping of what else
        # changes an mtime (and inode numbers get reused), and the values set
        # (random times, 1970-2242) never come back by accident.
        self.explicit_mtime = {}

    def entries(self):
        """(relpath, lstat) of everything in the native tree, root first."""
        out = [('', os.lstat(self.native.root))]
        for dirpath, dirnames, filenames in os.walk(self.native.root):
            for n in sorted(dirnames + filenames):
                full = os.path.join(dirpath, n)
                out.append((os.path.relpath(full, self.native.root), os.lstat(full)))
        return out

    def pick_existing(self, ents, kind=None, root=False):
        """An existing path (of that type); the root only when `root`."""
        cands = [e for e in ents if (kind is None or stat.S_IFMT(e[1].st_mode) == kind)
                 and (root or e[0])]
        return self.r.choice(cands)[0] if cands else None

    def pick_path(self, ents, existing_bias=0.5, root=False):
        """An existing path, or a (usually) new name under an existing directory.
        The root itself only when `root`: removing or renaming it means
        different things for a mount point and a plain directory."""
        if self.r.random() < existing_bias:
            p = self.pick_existing(ents, root=root)
            if p is not None:
                return p
        dirs = [e[0] for e in ents if stat.S_ISDIR(e[1].st_mode)
                and (e[0].count('/') + 1 if e[0] else 0) < MAX_DEPTH]
        d = self.r.choice(dirs) if dirs else ''
        return os.path.join(d, self.r.choice(NAMES)) if d else self.r.choice(NAMES)

    def data(self):
        x = self.r.random()
        n = (self.r.randint(1, 100) if x < 0.5 else self.r.randint(1, 65536) if x < 0.97
             else self.r.randint(1 << 20, (1 << 20) + (1 << 18)))
        return self.r.randbytes(n)

    def offset(self):
        x = self.r.random()
        return (self.r.randint(0, 4096) if x < 0.5 else self.r.randint(0, 300_000) if x < 0.95
                else self.r.randint(0, 4 << 20))

    def symlink_target(self, ents):
        # Relative, never with "..": the two roots differ above themselves.
        x = self.r.random()
        if x < 0.6:
            return self.r.choice(NAMES)
        if x < 0.9:
            return self.pick_existing(ents) or 'a'
        return '/nonexistent-msb-test/' + self.r.choice(NAMES)

    def mtime_known(self, st):
        return st is not None and self.explicit_mtime.get(st.st_ino) == st.st_mtime_ns

    def path_mtime_known(self, path, follow):
        try:
            st = os.stat(self.native.p(path)) if follow else os.lstat(self.native.p(path))
        except OSError:
            return False
        return self.mtime_known(st)

    def next(self):
        """(op, args, after) where after(native_result) updates bookkeeping."""
        r = self.r
        ents = self.entries()
        handles = list(self.native.handles)
        choice = r.choices([o for o, _ in OP_WEIGHTS], weights=[w for _, w in OP_WEIGHTS])[0]
        if choice in ('pwrite', 'append', 'pread', 'ftruncate', 'fsync', 'fallocate', 'lseek',
                      'fstat', 'close', 'copy_range', 'fallocate_mode') and not handles:
            choice = 'create'
        if choice in ('create', 'open') and len(handles) >= MAX_HANDLES:
            choice = 'close'
        noop = lambda res: None  # noqa: E731

        if choice in ('create', 'open'):
            path = None
            if r.random() < (0.3 if choice == 'create' else 0.8):
                path = self.pick_existing(ents, stat.S_IFREG)
            if path is None:
                path = self.pick_path(ents, 0.3 if choice == 'create' else 0.9)
            acc = r.choice([os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_RDWR])
            flags = acc | (os.O_CREAT if choice == 'create' else 0)
            if r.random() < 0.3:
                flags |= os.O_EXCL if choice == 'create' else 0
            if r.random() < 0.15 and acc != os.O_RDONLY:
                flags |= os.O_TRUNC
            if r.random() < 0.2:
                flags |= os.O_APPEND
            if r.random() < 0.1:
                flags |= os.O_NOFOLLOW
            keep = r.random() < 0.8
            h = self.next_handle if keep else None
            if keep:
                self.next_handle += 1
            mode = r.randint(0, PERM_MASK)

            def after(res, path=path, h=h, flags=flags):
                if res.ok:
                    st = os.stat(self.native.p(path))
                    i = st.st_ino
                    if h is not None:
                        self.handle_ino[h] = i
                        if stat.S_ISREG(st.st_mode):
                            self.handle_reg.add(h)
            return 'open', (h, path, flags, mode), after
        if choice == 'close':
            h = r.choice(handles)

            def after(res, h=h):
                self.handle_ino.pop(h, None)
                self.handle_reg.discard(h)
            return 'close', (h,), after
        h = r.choice(handles) if handles else None
        if choice == 'pwrite':
            return 'pwrite', (h, self.data(), self.offset()), noop
        if choice == 'append':
            return 'write', (h, self.data()), noop
        if choice == 'pread':
            return 'pread', (h, r.choice([1, 100, 4096, 65536, 1 << 20]), self.offset()), noop
        if choice == 'read_path':
            return 'read_path', (self.pick_path(ents, 0.9, root=True),), noop
        if choice == 'ftruncate':
            return 'ftruncate', (h, self.offset()), noop
        if choice == 'truncate':
            path = self.pick_path(ents, 0.9)
            return 'truncate', (path, self.offset()), noop
        if choice == 'fsync':
            return 'fsync', (h,), noop
        if choice == 'fallocate':
            return 'fallocate', (h, self.offset(), r.randint(1, 200_000)), noop
        if choice == 'fallocate_mode':
            # The modes FUSE passes on (COLLAPSE/INSERT are refused by the
            # kernel's FUSE client itself, so they would differ from ext4).
            mode = r.choice([FALLOC_FL_KEEP_SIZE, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                             FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE])
            return 'fallocate_mode', (h, mode, self.offset(), r.randint(1, 200_000)), noop
        if choice == 'lseek':
            # Regular files only: SEEK_DATA/SEEK_HOLE on a directory is each
            # file system's own business (ext4 says EOF is 2^63-1).
            regs = sorted(self.handle_reg)
            if not regs:
                return 'fstat', (h, False), noop
            h = r.choice(regs)
            return 'lseek', (h, self.offset(), r.choice([os.SEEK_DATA, os.SEEK_HOLE])), noop
        if choice == 'fstat':
            fd = self.native.handles[h]
            return 'fstat', (h, self.mtime_known(os.fstat(fd))), noop
        if choice == 'mkdir':
            path = self.pick_path(ents, 0.1)
            return 'mkdir', (path, r.randint(0, PERM_MASK) | 0o700), noop
        if choice in ('rmdir', 'unlink'):
            return choice, (self.pick_path(ents, 0.9),), noop
        if choice == 'rename2':
            src = self.pick_existing(ents) or 'a'
            dst = self.pick_path(ents, 0.6)
            return 'rename2', (src, dst, r.choice([RENAME_NOREPLACE, RENAME_EXCHANGE])), noop
        if choice == 'copy_range':
            return 'copy_range', (h, r.choice(handles), r.choice([1, 100, 4096, 100_000]),
                                  self.offset(), self.offset()), noop
        if choice in ('rename', 'link'):
            src = self.pick_existing(ents) or 'a'
            dst = self.pick_path(ents, 0.4)
            return choice, (src, dst), noop
        if choice == 'symlink':
            path = self.pick_path(ents, 0.2)
            return 'symlink', (self.symlink_target(ents), path), noop
        if choice == 'readlink':
            return 'readlink', (self.pick_existing(ents, stat.S_IFLNK) or 'a',), noop
        if choice == 'chmod':
            path = self.pick_path(ents, 0.9, root=True)
            return 'chmod', (path, r.randint(0, PERM_MASK)), noop
        if choice == 'utime':
            path = self.pick_path(ents, 0.9, root=True)
            ns = (r.randint(0, 2 ** 33) * 10 ** 9 + r.randint(0, 999_999_999),
                  r.randint(0, 2 ** 33) * 10 ** 9 + r.randint(0, 999_999_999))

            def after(res, p=path):
                if res.ok:
                    st = os.stat(self.native.p(p))
                    self.explicit_mtime[st.st_ino] = st.st_mtime_ns
            return 'utime', (path, ns), after
        if choice in ('stat', 'lstat'):
            path = self.pick_path(ents, 0.9, root=True)
            return choice, (path, self.path_mtime_known(path, choice == 'stat')), noop
        if choice == 'listdir':
            return 'listdir', (self.pick_existing(ents, stat.S_IFDIR, root=True) or '',), noop
        path = self.pick_path(ents, 0.9, root=True)
        name = r.choice(XATTRS)
        if choice == 'setxattr':
            flags = r.choice([0, 0, os.XATTR_CREATE, os.XATTR_REPLACE])
            return 'setxattr', (path, name, r.randbytes(r.randint(0, 300)), flags), noop
        if choice == 'getxattr':
            return 'getxattr', (path, name), noop
        if choice == 'listxattr':
            return 'listxattr', (path,), noop
        return 'removexattr', (path, name), noop


def lseek_valid(native, args, res):
    """Where the holes are is the host file system's choice (ext4 reports
    unwritten extents as holes once written back, and writeback timing
    differs between two files), and a server without FUSE_LSEEK gets the
    kernel's generic answer (data to EOF).  So SEEK_DATA/SEEK_HOLE answers
    are checked for being *true* of the (identical) contents, not equal:
    SEEK_DATA may only skip zeros; SEEK_HOLE must land on a zero or EOF."""
    h, off, whence = args
    # The handle may be write-only: read through a fresh open of its inode.
    fd = os.open('/proc/self/fd/%d' % native.handles[h], os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if not res.ok:
            if res.value != errno.ENXIO:
                return False
            if off >= size:
                return True
            return whence == os.SEEK_DATA and not any(os.pread(fd, size - off, off))
        r = res.value
        if off >= size or r < off or r > size:
            return False
        if whence == os.SEEK_DATA:
            return r < size and not any(os.pread(fd, r - off, off))
        return r == size or os.pread(fd, 1, r) == b'\0'
    finally:
        os.close(fd)


def tree(root, with_modes=True, hide_xattr=None):
    snap = fusetest.snapshot(root, with_times=False, with_inodes=False, with_modes=with_modes,
                             with_ids=with_modes)
    for rel, e in snap.items():
        if e['type'] == stat.S_IFDIR:
            e.pop('size')
        if hide_xattr:
            e['xattrs'] = {k: v for k, v in e['xattrs'].items() if not hide_xattr(k)}
    return snap


class RandomOpsBase(fusetest.StorageTestCase):
    DEFAULT_OPS = 5000

    def populate(self):
        self.native = os.path.join(self.top, 'native')
        os.mkdir(self.native)

    def test_random_sequence(self):
        seed = int(os.environ.get('MSB_TEST_SEED', random.SystemRandom().randrange(1 << 32)))
        count = int(os.environ.get('MSB_TEST_OPS', self.DEFAULT_OPS))
        sys.stderr.write('\n%s: seed %d, %d ops (replay: MSB_TEST_SEED=%d)\n'
                         % (type(self).__name__, seed, count, seed))
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        fuse, native = World('fuse', self.mnt), World('native', self.native)
        self.addCleanup(fuse.close_all)
        self.addCleanup(native.close_all)
        gen = Generator(random.Random(seed), native)
        history = []
        lseek_differs = 0
        for i in range(count):
            op, args, after = gen.next()
            a = run(fuse, op, args)
            b = run(native, op, args)
            history.append('%5d %s%r -> %r' % (i, op, _short(args), b))
            if a != b and op == 'lseek' and lseek_valid(native, args, a):
                lseek_differs += 1
            elif a != b:
                self.fail('seed %d, op %d: %s%r\n  fuse:   %r\n  native: %r\nlast ops:\n%s'
                          % (seed, i, op, _short(args), a, b, '\n'.join(history[-25:])))
            after(b)
        fuse.close_all()
        native.close_all()
        if lseek_differs:
            sys.stderr.write('note: %d lseek(SEEK_DATA/SEEK_HOLE) answers differed from the '
                             'native ones, all of them valid\n' % lseek_differs)
        # The final trees, through the mount and on the host behind it.
        t_native = tree(self.native)
        t_fuse = tree(self.mnt)
        self.assertEqual(t_native, t_fuse, 'seed %d: final trees differ (native -> fuse):\n%s'
                         % (seed, fusetest.diff_snapshots(t_native, t_fuse)))
        t_host = self.host_tree()
        t_native_h = tree(self.native, with_modes=self.HOST_MODES)
        self.assertEqual(t_native_h, t_host,
                         'seed %d: the host tree behind the share differs (native -> host):\n%s'
                         % (seed, fusetest.diff_snapshots(t_native_h, t_host)))

    HOST_MODES = True

    def host_tree(self):
        return tree(self.share, with_modes=self.HOST_MODES)


def _short(args):
    return tuple('<%d bytes>' % len(a) if isinstance(a, bytes) and len(a) > 16 else a
                 for a in args)


class RandomOpsIdentityOff(RandomOpsBase):
    """identity off: modes and owners pass through, so the host tree matches too."""
    HARNESS_ARGS = ['--identity', 'off']


class RandomOpsIdentityStrict(RandomOpsBase):
    """identity strict: the mount matches native; the host keeps its own modes."""
    HARNESS_ARGS = ['--identity', 'strict']
    DEFAULT_OPS = 2000
    HOST_MODES = False

    def host_tree(self):
        # The identity xattr is the server's own bookkeeping on the host.
        return tree(self.share, with_modes=False, hide_xattr=lambda n: 'msb' in n)


class RandomOpsNoOpenat2(RandomOpsBase):
    """The fallback resolver, shorter."""
    HARNESS_ARGS = ['--identity', 'off', '--no-openat2']
    EXPECT_LOG = ('openat2', 1)
    DEFAULT_OPS = 2000


class ConcurrentRandomOps(RandomOpsBase):
    """Several clients at once, each with its own subtree and sequence, so
    the server's workers run requests side by side (tables, locks, handles)."""
    HARNESS_ARGS = ['--identity', 'off', '--threads', '4']
    CLIENTS = 3
    DEFAULT_OPS = 1500

    def test_random_sequence(self):
        seed = int(os.environ.get('MSB_TEST_SEED', random.SystemRandom().randrange(1 << 32)))
        count = int(os.environ.get('MSB_TEST_OPS', self.DEFAULT_OPS))
        sys.stderr.write('\n%s: seed %d, %d clients x %d ops (replay: MSB_TEST_SEED=%d; the '
                         'interleaving is not replayed)\n'
                         % (type(self).__name__, seed, self.CLIENTS, count, seed))
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        failures = []

        def client(n):
            sub = 't%d' % n
            os.mkdir(os.path.join(self.mnt, sub))
            os.mkdir(os.path.join(self.native, sub))
            fuse = World('fuse', os.path.join(self.mnt, sub))
            native = World('native', os.path.join(self.native, sub))
            gen = Generator(random.Random(seed + n), native)
            try:
                for i in range(count):
                    op, args, after = gen.next()
                    a, b = run(fuse, op, args), run(native, op, args)
                    if a != b and not (op == 'lseek' and lseek_valid(native, args, a)):
                        failures.append('client %d (seed %d), op %d: %s%r\n  fuse:   %r\n'
                                        '  native: %r' % (n, seed + n, i, op, _short(args), a, b))
                        return
                    after(b)
            except Exception as e:  # reported below
                failures.append('client %d: %r' % (n, e))
            finally:
                fuse.close_all()
                native.close_all()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(self.CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(failures, [])
        t_native, t_fuse = tree(self.native), tree(self.mnt)
        self.assertEqual(t_native, t_fuse, 'seed %d: final trees differ (native -> fuse):\n%s'
                         % (seed, fusetest.diff_snapshots(t_native, t_fuse)))


class EdgeCases(fusetest.StorageTestCase):
    """Fixed sequences at the limits, compared the same way: long names and
    link targets, big directories, xattr sizes, huge offsets, many links."""
    HARNESS_ARGS = ['--identity', 'off']

    def populate(self):
        self.native = os.path.join(self.top, 'native')
        os.mkdir(self.native)

    def compare(self, seq):
        fuse, native = World('fuse', self.mnt), World('native', self.native)
        self.addCleanup(fuse.close_all)
        self.addCleanup(native.close_all)
        for i, (op, *args) in enumerate(seq):
            a, b = run(fuse, op, tuple(args)), run(native, op, tuple(args))
            self.assertEqual(a, b, 'op %d: %s%r\n  fuse:   %r\n  native: %r'
                             % (i, op, _short(args), a, b))
        fuse.close_all()
        native.close_all()

    def test_name_and_target_lengths(self):
        self.compare([
            ('open', None, 'n' * 255, os.O_CREAT | os.O_WRONLY, 0o644),
            ('open', None, 'n' * 256, os.O_CREAT | os.O_WRONLY, 0o644),
            ('stat', 'n' * 255, False), ('listdir', ''),
            ('symlink', 't' * 4095, 'long'), ('readlink', 'long'), ('lstat', 'long', False),
            ('symlink', 't' * 4096, 'too-long'),
            ('mkdir', 'd' * 255, 0o755), ('rename', 'd' * 255, 'e' * 255), ('listdir', ''),
            ('rename', 'n' * 255, 'n' * 256),
            ('setxattr', 'long', 'user.x', b'v', 0),
            ('setxattr', 'n' * 255, 'user.' + 'x' * 250, b'v', 0),
            ('setxattr', 'n' * 255, 'user.' + 'x' * 251, b'v', 0),
            ('listxattr', 'n' * 255),
        ])

    def test_big_directory(self):
        names = ['%04d-%s' % (i, 'x' * 120) for i in range(1500)]
        seq = [('open', None, n, os.O_CREAT | os.O_WRONLY, 0o600) for n in names]
        seq += [('listdir', '')]
        seq += [('unlink', n) for n in names[::3]]
        seq += [('listdir', ''), ('rename', names[1], 'renamed'), ('listdir', '')]
        self.compare(seq)

    def test_xattr_sizes(self):
        seq = [('open', None, 'f', os.O_CREAT | os.O_WRONLY, 0o644)]
        for size in (0, 1, 255, 1000, 3000, 4096, 8192, 65536, 65537):
            seq += [('setxattr', 'f', 'user.s%d' % size, b'v' * size, 0),
                    ('getxattr', 'f', 'user.s%d' % size), ('listxattr', 'f')]
        seq += [('setxattr', 'f', 'user.n%03d' % i, b'x' * 40, 0) for i in range(120)]
        seq += [('listxattr', 'f'), ('removexattr', 'f', 'user.s1'),
                ('removexattr', 'f', 'user.s1'), ('getxattr', 'f', 'user.none'),
                ('setxattr', 'f', 'user.s0', b'new', os.XATTR_CREATE),
                ('setxattr', 'f', 'user.none', b'new', os.XATTR_REPLACE)]
        self.compare(seq)

    def test_offsets_and_links(self):
        seq = [('open', 0, 'sparse', os.O_CREAT | os.O_RDWR, 0o644),
               ('pwrite', 0, b'end', 1 << 40), ('fstat', 0, False),
               ('pread', 0, 16, (1 << 40) - 8), ('pread', 0, 16, 1 << 20),
               ('ftruncate', 0, 1 << 44), ('ftruncate', 0, (1 << 40) + 3), ('fstat', 0, False),
               ('pwrite', 0, b'x', (1 << 63) - 2), ('pwrite', 0, b'x', 1 << 50),
               ('copy_range', 0, 0, 3, 1 << 40, 5), ('pread', 0, 8, 0),
               ('close', 0)]
        seq += [('link', 'sparse', 'l%03d' % i) for i in range(100)]
        seq += [('stat', 'l050', False), ('unlink', 'sparse'), ('lstat', 'l099', False),
                ('rename', 'l001', 'l002'), ('listdir', ''), ('lstat', 'l002', False),
                ('mkdir', 'a', 0o755), ('mkdir', 'a/b', 0o755), ('rename', 'a', 'a/b/c'),
                ('rename', 'a/b', 'a'), ('rmdir', 'a')]
        self.compare(seq)



# A helper process: try to take a write lock on the whole file; print what happened.
_TRY_LOCK = """
import fcntl, sys
f = open(sys.argv[1], 'r+')
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print('locked')
except OSError as e:
    print('busy')
"""


class PosixLocksBase(fusetest.StorageTestCase):
    """POSIX lock semantics through the kernel's FUSE client, the same as on
    the native file system: a lock survives a forked child closing the
    descriptor it inherited, and goes when its owner closes any descriptor
    of the file.  With locks=host the server keeps them (the FLUSH carries
    the closer's lock owner); with locks=guest, the default, the client's
    kernel does."""

    def populate(self):
        self.native = os.path.join(self.top, 'native')
        os.mkdir(self.native)

    def try_lock(self, path):
        return subprocess.run([sys.executable, '-c', _TRY_LOCK, path],
                              capture_output=True, text=True, timeout=30).stdout.strip()

    def sequence(self, root):
        import fcntl
        path = os.path.join(root, 'db')
        with open(path, 'w') as f:
            f.write('x' * 100)
        out = []
        fd = os.open(path, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        out.append(self.try_lock(path))
        pid = os.fork()
        if pid == 0:
            os.close(fd)  # the child's close of what it inherited
            os._exit(0)
        os.waitpid(pid, 0)
        out.append(self.try_lock(path))
        dup = os.dup(fd)
        os.close(dup)  # the owner's close of any descriptor drops its locks
        out.append(self.try_lock(path))
        os.close(fd)
        return out

    def test_lock_survives_a_childs_close(self):
        native = self.sequence(self.native)
        self.assertEqual(native, ['busy', 'busy', 'locked'])
        self.assertEqual(self.sequence(self.mnt), native)

    def held_through(self, holder_root, probe_root):
        """Lock 'f' through holder_root; what a process sees through probe_root."""
        import fcntl
        with open(os.path.join(holder_root, 'f'), 'w') as f:
            f.write('x')
            f.flush()
            fcntl.lockf(f, fcntl.LOCK_EX)
            return self.try_lock(os.path.join(probe_root, 'f'))


class PosixLocksGuest(PosixLocksBase):
    """locks=guest (the default): the guest's locks stay in the guest.  A
    host process is neither shown nor blocked by them, and the guest by the
    host's (docs/storage.md "Locks")."""
    HARNESS_ARGS = []

    def test_guest_locks_are_invisible_to_the_host(self):
        self.assertEqual(self.held_through(self.mnt, self.mnt), 'busy')
        self.assertEqual(self.held_through(self.mnt, self.share), 'locked')
        self.assertEqual(self.held_through(self.share, self.mnt), 'locked')


class PosixLocksHost(PosixLocksBase):
    """locks=host: the guest's POSIX locks are the host file's too."""
    HARNESS_ARGS = ['--locks', 'host']

    def test_guest_locks_are_the_hosts(self):
        self.assertEqual(self.held_through(self.mnt, self.mnt), 'busy')
        self.assertEqual(self.held_through(self.mnt, self.share), 'busy')
        self.assertEqual(self.held_through(self.share, self.mnt), 'busy')


del RandomOpsBase, PosixLocksBase

if __name__ == '__main__':
    fusetest.main()
