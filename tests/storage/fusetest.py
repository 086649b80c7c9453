# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the storage suites: start msb-fusemount on a temporary
share, wait for it, take it down again, and compare trees.

Layout of every test (all under one fresh temporary parent, TOP):

    TOP/host/share      HOSTDIR, what the server exports
    TOP/host/...        siblings of the share: secrets the mount must not reach
    TOP/client/mnt      the FUSE mount point; TOP/client holds nothing else

The client side is kept empty on purpose: a path that leaves the mount
through ".." (or a relative symlink the kernel follows on the client side)
lands in TOP/client, where nothing exists, so it can never be mistaken for
an escape, and anything with the secret's content read from an fd on the
mount's device is one.
"""
import errno
import hashlib
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HARNESS_ENV = 'MSB_FUSEMOUNT'


def harness_path():
    path = os.environ.get(HARNESS_ENV)
    if not path:
        raise unittest.SkipTest(
            '%s is not set (run the suites through tests/storage/run.py)' % HARNESS_ENV)
    return path


def can_run():
    """None when FUSE mounts can be made here, else why not."""
    if os.geteuid() != 0:
        return 'not root'
    if not os.path.exists('/dev/fuse'):
        return 'no /dev/fuse'
    return None


def _unescape_mountinfo(field):
    out, i = [], 0
    while i < len(field):
        if field[i] == '\\' and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return ''.join(out)


def mount_points():
    """Every mount point this process sees, as a list of paths."""
    with open('/proc/self/mountinfo') as f:
        return [_unescape_mountinfo(line.split()[4]) for line in f]


def mounts_under(path):
    path = os.path.realpath(path)
    return [m for m in mount_points() if m == path or m.startswith(path + '/')]


def lazy_umount(path):
    subprocess.run(['umount', '-l', path], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


class HarnessError(Exception):
    def __init__(self, rc, stderr):
        super().__init__('msb-fusemount exited %s: %s' % (rc, stderr.strip()))
        self.rc = rc
        self.stderr = stderr


ENABLE_URING = '/sys/module/fuse/parameters/enable_uring'


def set_enable_uring(value):
    """Write the fuse module's enable_uring ('Y' or 'N'); returns what it was."""
    with open(ENABLE_URING) as f:
        before = f.read().strip()
    with open(ENABLE_URING, 'w') as f:
        f.write(value)
    return before


def uring_unavailable():
    """Why FUSE over io_uring cannot run here, or None."""
    if not os.path.exists(ENABLE_URING):
        return 'this kernel has no FUSE over io_uring (%s)' % ENABLE_URING
    try:
        with open('/proc/sys/kernel/io_uring_disabled') as f:
            if f.read().strip() != '0':
                return 'io_uring is disabled (kernel.io_uring_disabled)'
    except OSError:
        pass  # before 6.6 there is no such switch
    return None


def transport_args(args):
    """--transport from MSB_TEST_TRANSPORT (run.py's passes), unless the test chose.

    A share with host locks is served over /dev/fuse whatever the pass: the
    harness refuses io_uring there (a SETLKW may wait)."""
    t = os.environ.get('MSB_TEST_TRANSPORT')
    if not t or '--transport' in args or ('--locks' in args and
                                          args[args.index('--locks') + 1:][:1] == ['host']):
        return []
    return ['--transport', t]


class Mount:
    """One msb-fusemount process serving host_dir on mnt."""

    def __init__(self, host_dir, mnt, args=(), env=None, log_level='info'):
        self.host_dir = host_dir
        self.mnt = mnt
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault('MSB_LOG', log_level)
        self.proc = None
        self.rc = None
        self._err = tempfile.TemporaryFile(mode='w+')

    def start(self, timeout=20):
        self.proc = subprocess.Popen(
            [harness_path()] + transport_args(self.args) + self.args + [self.host_dir, self.mnt],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err,
            env=self.env)
        deadline = time.monotonic() + timeout
        line = b''
        while not line.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise HarnessError('(timeout waiting for "ready")', self.stderr())
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.rc = self.proc.wait()
                raise HarnessError(self.rc, self.stderr())
            line += chunk
        if line != b'ready\n':
            self.stop()
            raise HarnessError('(said %r, not "ready")' % line, self.stderr())
        self.dev = os.stat(self.mnt).st_dev
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stop the harness; returns its exit status.  Never leaves a mount."""
        if self.proc is None:
            return self.rc
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._err.write('\n(test: msb-fusemount did not exit on %s; killed)\n'
                                % signal.Signals(sig).name)
        self.rc = self.proc.returncode
        self.proc.stdout.close()
        self.proc = None
        if os.path.realpath(self.mnt) in mount_points():
            self._err.write('\n(test: %s was still mounted after exit)\n' % self.mnt)
            lazy_umount(self.mnt)
            self.rc = self.rc if self.rc else -1000
        return self.rc

    def close(self):
        self._err.close()

    def stderr(self):
        self._err.flush()
        self._err.seek(0)
        text = self._err.read()
        self._err.seek(0, os.SEEK_END)
        return text


def write_file(path, data, mode=None):
    with open(path, 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    if mode is not None:
        os.chmod(path, mode)


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def snapshot(root, with_ids=True, with_times=True, with_modes=True, with_inodes=True):
    """Everything about a host tree a write could change (atime excepted)."""
    out = {}

    def entry(path, rel):
        st = os.lstat(path)
        e = {'type': stat.S_IFMT(st.st_mode), 'size': st.st_size, 'nlink': st.st_nlink}
        if with_modes:
            e['mode'] = stat.S_IMODE(st.st_mode)
        if with_ids:
            e['uid'], e['gid'] = st.st_uid, st.st_gid
        if with_times:
            e['mtime'], e['ctime'] = st.st_mtime_ns, st.st_ctime_ns
        if with_inodes:
            e['ino'] = st.st_ino
        if stat.S_ISREG(st.st_mode):
            e['sha256'] = hashlib.sha256(read_file(path)).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            e['target'] = os.readlink(path)
        try:
            names = sorted(os.listxattr(path, follow_symlinks=False))
        except OSError as ex:
            names = ['<%s>' % errno.errorcode.get(ex.errno, ex.errno)]
        e['xattrs'] = {}
        for n in names:
            if n.startswith('<'):
                continue
            try:
                e['xattrs'][n] = os.getxattr(path, n, follow_symlinks=False)
            except OSError as ex:
                e['xattrs'][n] = '<%s>' % errno.errorcode.get(ex.errno, ex.errno)
        out[rel] = e

    entry(root, '.')
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            entry(full, os.path.relpath(full, root))
    return out


def diff_snapshots(a, b):
    lines = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            lines.append('+ %s %r' % (k, b[k]))
        elif k not in b:
            lines.append('- %s %r' % (k, a[k]))
        elif a[k] != b[k]:
            fields = sorted(f for f in set(a[k]) | set(b[k]) if a[k].get(f) != b[k].get(f))
            lines.append('~ %s: %s' % (k, ', '.join(
                '%s %r -> %r' % (f, a[k].get(f), b[k].get(f)) for f in fields)))
    return '\n'.join(lines)


def errname(e):
    return errno.errorcode.get(e, str(e))


class StorageTestCase(unittest.TestCase):
    """A fresh share and mount per test; the mount is always taken down."""

    HARNESS_ARGS = []
    # Lines of the harness's stderr that must mention this word, per run
    # (None: not checked).  The no-openat2 variants set ('openat2', 1).
    EXPECT_LOG = None
    START_MOUNT = True

    def setUp(self):
        why = can_run()
        if why:
            self.skipTest(why)
        self.top = tempfile.mkdtemp(prefix='msb-storage-')
        self.addCleanup(self._remove_top)
        self.hostroot = os.path.join(self.top, 'host')
        self.share = os.path.join(self.hostroot, 'share')
        self.client = os.path.join(self.top, 'client')
        self.mnt = os.path.join(self.client, 'mnt')
        for d in (self.share, self.mnt):
            os.makedirs(d)
        self.extra_mounts = []
        self.populate()
        self.mount = None
        if self.START_MOUNT:
            self.start_mount()

    def populate(self):
        """Hook: fill the share and its surroundings before the mount starts."""

    def start_mount(self, args=None, **kw):
        self.mount = Mount(self.share, self.mnt,
                           self.HARNESS_ARGS + (args or []), **kw)
        # Cleanups run last-in first-out: the mount goes before the tree.
        self.addCleanup(self._stop_mount, self.mount)
        self.mount.start()
        return self.mount

    def stop_mount(self):
        m, self.mount = self.mount, None
        return self._stop_mount(m)

    def _stop_mount(self, m):
        if m is None or m._err.closed:
            return
        if m.proc is None and m.rc is not None:
            m.close()  # stopped (and checked) by the test itself
            return
        rc = m.stop()
        err = m.stderr()
        m.close()
        self.assertEqual(rc, 0, 'msb-fusemount exited %s; its stderr:\n%s' % (rc, err))
        if self.EXPECT_LOG:
            word, count = self.EXPECT_LOG
            lines = [ln for ln in err.splitlines() if word in ln]
            self.assertEqual(len(lines), count,
                             'expected %d log line(s) mentioning %r, got:\n%s'
                             % (count, word, err))

    def mount_tmpfs(self, path):
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'msb-test', path], check=True)
        self.extra_mounts.append(path)

    def _remove_top(self):
        for p in reversed(self.extra_mounts):
            lazy_umount(p)
        left = mounts_under(self.top)
        for p in left:
            lazy_umount(p)
        # Never remove a tree with something still mounted inside it.
        if mounts_under(self.top):
            raise AssertionError('mounts left under %s: %s' % (self.top, mounts_under(self.top)))
        shutil.rmtree(self.top)
        if left:
            raise AssertionError('mounts were left behind: %s' % left)

    # -- helpers ----------------------------------------------------------

    def m(self, *parts):
        return os.path.join(self.mnt, *parts)

    def h(self, *parts):
        return os.path.join(self.share, *parts)

    def assertErrno(self, expected, fn, *args, **kw):
        """fn(*args) fails with one of `expected` (an errno or a set); returns it."""
        want = {expected} if isinstance(expected, int) else set(expected)
        try:
            res = fn(*args, **kw)
        except OSError as e:
            self.assertIn(e.errno, want, '%s%r: got %s, want %s' % (
                getattr(fn, '__name__', fn), args, errname(e.errno),
                '/'.join(sorted(errname(w) for w in want))))
            return e.errno
        if isinstance(res, int) and res >= 0 and getattr(fn, '__name__', '') == 'open':
            os.close(res)
        self.fail('%s%r succeeded (%r), want %s' % (
            getattr(fn, '__name__', fn), args, res,
            '/'.join(sorted(errname(w) for w in want))))


def main():
    """Run one suite file directly: MSB_FUSEMOUNT=... python3 test_x.py [-v]."""
    why = can_run()
    if why:
        print('skipped: %s' % why)
        sys.exit(77)
    unittest.main(module='__main__')
