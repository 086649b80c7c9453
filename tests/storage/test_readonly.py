# SPDX-License-Identifier: Apache-2.0
"""Read-only suite: with --ro every way of changing the share fails, reads
work, and the host tree is byte-for-byte unchanged (contents, modes, owners,
xattrs, mtimes, ctimes, inode numbers, link counts) afterwards.

The mount itself is read-write: read-only is the server's to enforce, so
every request reaches it.  Most refusals are the server's (EROFS).  A few
operations never get that far because the kernel answers first, from the
fd's open mode: those expect the kernel's errno, and are listed as such.
"""
import errno
import mmap
import os
import stat

import fusetest
from fusetest import read_file, write_file

EROFS = errno.EROFS


class ReadOnlyBase(fusetest.StorageTestCase):
    HARNESS_ARGS = ['--ro']

    def populate(self):
        write_file(self.h('f'), 'hello, read-only world\n' * 100, 0o644)
        write_file(self.h('exe'), '#!/bin/sh\n', 0o755)
        os.mkdir(self.h('d'))
        write_file(self.h('d', 'inner'), 'inner\n', 0o600)
        os.mkdir(self.h('d', 'nested'))
        os.mkdir(self.h('empty'))
        os.symlink('f', self.h('link'))
        os.link(self.h('f'), self.h('hardlink'))
        os.setxattr(self.h('f'), 'user.kept', b'value')
        os.chown(self.h('d', 'inner'), 1234, 5678)
        os.utime(self.h('f'), ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
        self.outside = os.path.join(self.hostroot, 'outside-src')
        write_file(self.outside, 'x' * 8192)
        self.before = fusetest.snapshot(self.share)
        # Runs after the harness has stopped (cleanups are last-in, first-out),
        # so whatever the server does on release or share_close counts too.
        self.addCleanup(self._compare)

    def _compare(self):
        after = fusetest.snapshot(self.share)
        self.assertEqual(self.before, after, 'the read-only share changed:\n' +
                         fusetest.diff_snapshots(self.before, after))

    def test_reads_work(self):
        for name in ('f', 'exe', 'd/inner', 'hardlink', 'link'):
            self.assertEqual(read_file(self.m(name)), read_file(self.h(name)))
        self.assertEqual(sorted(os.listdir(self.mnt)), sorted(os.listdir(self.share)))
        self.assertEqual(sorted(os.listdir(self.m('d'))), ['inner', 'nested'])
        self.assertEqual(os.readlink(self.m('link')), 'f')
        self.assertEqual(os.getxattr(self.m('f'), 'user.kept'), b'value')
        self.assertIn('user.kept', os.listxattr(self.m('f')))
        st, hst = os.stat(self.m('f')), os.stat(self.h('f'))
        self.assertEqual((st.st_size, st.st_nlink, st.st_mtime_ns),
                         (hst.st_size, hst.st_nlink, hst.st_mtime_ns))
        # A private writable mapping is the client's own copy.
        fd = os.open(self.m('f'), os.O_RDONLY)
        try:
            mm = mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
            mm[0:5] = b'XXXXX'
            mm.close()
            self.assertEqual(os.pread(fd, 5, 0), b'hello')
        finally:
            os.close(fd)
        os.statvfs(self.mnt)

    def test_opening_for_write(self):
        for name in ('f', 'exe', 'd/inner', 'hardlink', 'link'):
            for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                          os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_TRUNC,
                          os.O_RDWR | os.O_CREAT):
                with self.subTest(name=name, flags=oct(flags)):
                    self.assertErrno(EROFS, os.open, self.m(name), flags)
        for flags in (os.O_WRONLY | os.O_CREAT, os.O_RDONLY | os.O_CREAT,
                      os.O_RDWR | os.O_CREAT | os.O_EXCL, os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
            with self.subTest(new=True, flags=oct(flags)):
                self.assertErrno(EROFS, os.open, self.m('d', 'new'), flags, 0o644)
        self.assertErrno({EROFS, errno.EOPNOTSUPP, errno.EISDIR}, os.open, self.m('d'),
                         os.O_TMPFILE | os.O_WRONLY, 0o600)

    def test_namespace_changes(self):
        cases = [
            ('unlink', os.unlink, (self.m('f'),)),
            ('unlink link', os.unlink, (self.m('link'),)),
            ('rmdir', os.rmdir, (self.m('empty'),)),
            ('rmdir nonempty', os.rmdir, (self.m('d'),)),
            ('rename', os.rename, (self.m('f'), self.m('f2'))),
            ('rename over', os.rename, (self.m('f'), self.m('exe'))),
            ('rename dir', os.rename, (self.m('empty'), self.m('d', 'moved'))),
            ('rename exchange-like', os.replace, (self.m('exe'), self.m('hardlink'))),
            ('mkdir', os.mkdir, (self.m('newdir'),)),
            ('mkdir nested', os.mkdir, (self.m('d', 'newdir'),)),
            ('symlink', os.symlink, ('f', self.m('newlink'))),
            ('link', os.link, (self.m('f'), self.m('newhard'))),
            ('mkfifo', os.mkfifo, (self.m('fifo'),)),
            ('mknod', os.mknod, (self.m('node'), stat.S_IFREG | 0o644)),
        ]
        for what, fn, args in cases:
            with self.subTest(op=what):
                self.assertErrno(EROFS, fn, *args)

    def test_attribute_changes(self):
        cases = [
            ('chmod', os.chmod, (self.m('f'), 0o600), {}),
            ('chmod root', os.chmod, (self.mnt, 0o700), {}),
            ('chmod dir', os.chmod, (self.m('d'), 0o700), {}),
            ('chown', os.chown, (self.m('f'), 1, 1), {}),
            ('chown gid only', os.chown, (self.m('f'), -1, 1), {}),
            ('lchown', os.chown, (self.m('link'), 1, 1), {'follow_symlinks': False}),
            ('utime', os.utime, (self.m('f'),), {'ns': (1, 1)}),
            ('utime now', os.utime, (self.m('f'),), {}),
            ('utime link', os.utime, (self.m('link'),), {'ns': (1, 1), 'follow_symlinks': False}),
            ('truncate', os.truncate, (self.m('f'), 0), {}),
            ('truncate grow', os.truncate, (self.m('f'), 1 << 20), {}),
            ('setxattr', os.setxattr, (self.m('f'), 'user.new', b'v'), {}),
            ('setxattr replace', os.setxattr, (self.m('f'), 'user.kept', b'w'), {}),
            ('setxattr dir', os.setxattr, (self.m('d'), 'user.new', b'v'), {}),
            ('removexattr', os.removexattr, (self.m('f'), 'user.kept'), {}),
        ]
        for what, fn, args, kw in cases:
            with self.subTest(op=what):
                self.assertErrno(EROFS, fn, *args, **kw)

    def test_fd_level_writes(self):
        # The only fds the share hands out are read-only, so these are
        # answered by the kernel from the fd's mode, before any request.
        fd = os.open(self.m('f'), os.O_RDONLY)
        src = os.open(self.outside, os.O_RDONLY)
        try:
            with self.subTest(op='mmap MAP_SHARED PROT_WRITE'):
                self.assertRaises(PermissionError, mmap.mmap, fd, 0, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
            with self.subTest(op='write'):
                self.assertErrno(errno.EBADF, os.write, fd, b'x')
            with self.subTest(op='ftruncate'):
                self.assertErrno({errno.EBADF, errno.EINVAL}, os.ftruncate, fd, 0)
            with self.subTest(op='posix_fallocate'):
                self.assertErrno(errno.EBADF, os.posix_fallocate, fd, 0, 1 << 20)
            with self.subTest(op='copy_file_range'):
                self.assertErrno(errno.EBADF, os.copy_file_range, src, fd, 4096)
            with self.subTest(op='fchmod'):
                self.assertErrno(EROFS, os.fchmod, fd, 0o600)
            with self.subTest(op='fsetxattr'):
                self.assertErrno(EROFS, os.setxattr, fd, 'user.new', b'v')
            with self.subTest(op='futimens'):
                self.assertErrno(EROFS, os.utime, fd, ns=(1, 1))
            # Reads and a read-only mapping still work.
            mm = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
            self.assertEqual(mm[:5], b'hello')
            mm.close()
            os.fsync(fd)  # a no-op on a clean file; must not fail or write
        finally:
            os.close(fd)
            os.close(src)
        with self.subTest(op='copy_file_range into a new file'):
            self.assertErrno(EROFS, os.open, self.m('copy'), os.O_WRONLY | os.O_CREAT, 0o644)


class ReadOnlyTests(ReadOnlyBase):
    """openat2 available."""


class ReadOnlyTestsNoOpenat2(ReadOnlyBase):
    HARNESS_ARGS = ['--ro', '--no-openat2']
    EXPECT_LOG = ('openat2', 1)


del ReadOnlyBase

if __name__ == '__main__':
    fusetest.main()
