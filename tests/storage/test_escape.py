# SPDX-License-Identifier: Apache-2.0
"""Escape suite: nothing outside the share is ever readable, writable or
listable through the mount, whatever the share contains and whatever the
host does to it while the client works.

The kernel resolves ".." and symlinks on the client side (that is FUSE, and
virtio-fs in a guest, working as designed), so a path that leaves the mount
is not "through the mount".  What is: data read from an fd whose st_dev is
the mount's, names listed from a directory fd on the mount, and every
operation the server performs on a nodeid (it must act on the inode itself,
never on what a host symlink names).  The secret's content and name carry a
random marker; seeing either through the mount is an escape.
"""
import errno
import os
import secrets
import stat
import subprocess
import threading
import time
import unittest

import fusetest
from fusetest import errname, read_file, write_file


class EscapeBase(fusetest.StorageTestCase):

    def populate(self):
        self.marker = 'MSB-SECRET-' + secrets.token_hex(8)
        self.secret = os.path.join(self.hostroot, 'secret')
        write_file(self.secret, self.marker + '\n', 0o600)
        os.setxattr(self.secret, 'user.secret', self.marker.encode())
        self.outside = os.path.join(self.hostroot, 'outside_dir')
        os.mkdir(self.outside)
        write_file(os.path.join(self.outside, 'file'), self.marker)
        write_file(os.path.join(self.outside, 'outside-only-' + self.marker), self.marker)

        write_file(self.h('file.txt'), 'inside\n')
        os.mkdir(self.h('sub'))
        write_file(self.h('sub', 'inner.txt'), 'inner\n')
        os.mkdir(self.h('sub', 'deeper'))
        os.symlink('/etc', self.h('d'))
        os.symlink('../outside_dir', self.h('d2'))
        os.symlink(self.outside, self.h('d3'))
        os.symlink('../secret', self.h('l'))
        os.symlink(self.secret, self.h('s'))
        os.symlink('/proc/self/root' + self.secret, self.h('m'))
        os.symlink('/proc/self/fd/0', self.h('fdlink'))
        os.symlink('/proc/self/cwd', self.h('cwdlink'))

    # -- what "through the mount" means ----------------------------------

    def read_via_mount(self, path, dir_fd=None, flags=0):
        """The file's content if it opens to an fd on the mount; None if it
        opens elsewhere (the client left the mount); OSError if it fails."""
        fd = os.open(path, os.O_RDONLY | flags, dir_fd=dir_fd)
        try:
            if os.fstat(fd).st_dev != self.mount.dev:
                return None
            return os.read(fd, 1 << 16)
        finally:
            os.close(fd)

    def assertNoMarker(self, data, what):
        if data is None:
            return
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode('latin-1')
        if not isinstance(data, str):
            data = repr(data)
        self.assertNotIn(self.marker, data, 'ESCAPE: %s showed the secret' % what)

    def assertSecretUntouched(self):
        st = os.stat(self.secret)
        self.assertEqual(read_file(self.secret).decode(), self.marker + '\n')
        self.assertEqual((st.st_nlink, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                         (1, 0, 0, 0o600), 'the secret outside the share changed')

    def tearDown(self):
        # Every test ends with the world outside the share intact.
        self.assertSecretUntouched()
        self.assertEqual(sorted(os.listdir(self.hostroot)),
                         ['outside_dir', 'secret', 'share'])
        self.assertEqual(sorted(os.listdir(self.client)), ['mnt'])
        self.assertEqual(sorted(os.listdir(self.outside)),
                         sorted(['file', 'outside-only-' + self.marker]))

    # -- ".." ----------------------------------------------------------------

    def test_dotdot_chains(self):
        root = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        sub = os.open(self.m('sub', 'deeper'), os.O_PATH | os.O_DIRECTORY)
        try:
            self.assertEqual(os.fstat(root).st_dev, self.mount.dev)
            cases = [(None, self.m('..', 'secret')), (None, self.m('..', '..', 'secret')),
                     (None, self.m('sub', '..', '..', 'secret')),
                     (None, self.m('sub', 'deeper', '..', '..', '..', 'secret')),
                     (root, '../secret'), (root, '../../x'), (root, './../secret'),
                     (root, 'sub/../../secret'), (root, 'sub/./../../secret'),
                     (sub, '../../secret'), (sub, '../../../secret'),
                     (sub, '../../../host/secret'), (root, '../../host/secret')]
            for dir_fd, path in cases:
                with self.subTest(path=path, dir_fd=dir_fd):
                    try:
                        data = self.read_via_mount(path, dir_fd)
                    except OSError as e:
                        self.assertIn(e.errno, (errno.ENOENT, errno.EXDEV))
                        continue
                    self.assertNoMarker(data, path)
            # Listing "up" from inside the mount never shows the share's siblings
            # through the mount's device.
            for dir_fd, path in [(root, '..'), (sub, '../../..'), (None, self.m('..'))]:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
                try:
                    names = os.listdir(fd)
                    if os.fstat(fd).st_dev == self.mount.dev:
                        self.assertNotIn('secret', names)
                        self.assertNotIn('outside_dir', names)
                finally:
                    os.close(fd)
        finally:
            os.close(root)
            os.close(sub)

    def test_mount_root_has_only_the_share(self):
        self.assertEqual(sorted(os.listdir(self.mnt)), sorted(os.listdir(self.share)))
        # The root's ".." entry, as the server reports it, is not a way out.
        st_root = os.stat(self.mnt)
        self.assertEqual(stat.S_IFMT(st_root.st_mode), stat.S_IFDIR)

    # -- symlinks the host placed in the share -----------------------------

    def test_symlinks_are_shown_not_followed(self):
        links = {'d': '/etc', 'd2': '../outside_dir', 'd3': self.outside, 'l': '../secret',
                 's': self.secret, 'm': '/proc/self/root' + self.secret,
                 'fdlink': '/proc/self/fd/0', 'cwdlink': '/proc/self/cwd'}
        for name, target in links.items():
            with self.subTest(link=name):
                st = os.stat(self.m(name), follow_symlinks=False)
                self.assertTrue(stat.S_ISLNK(st.st_mode), '%s: mode %o' % (name, st.st_mode))
                self.assertEqual(st.st_size, len(target))
                self.assertEqual(os.readlink(self.m(name)), target)
                # O_NOFOLLOW on the last component: the client refuses the link.
                self.assertErrno(errno.ELOOP, os.open, self.m(name),
                                 os.O_RDONLY | os.O_NOFOLLOW)
                # An O_PATH fd to the link itself is on the mount, and is a link.
                fd = os.open(self.m(name), os.O_PATH | os.O_NOFOLLOW)
                try:
                    fst = os.fstat(fd)
                    self.assertEqual(fst.st_dev, self.mount.dev)
                    self.assertTrue(stat.S_ISLNK(fst.st_mode))
                    # Names "through" a link fd are not directory lookups.
                    self.assertErrno(errno.ENOTDIR, os.open, 'passwd', os.O_RDONLY,
                                     dir_fd=fd)
                    self.assertErrno(errno.ENOTDIR, os.open, 'file', os.O_RDONLY, dir_fd=fd)
                finally:
                    os.close(fd)
                # The server reports the link, never the target's xattrs.
                try:
                    names = os.listxattr(self.m(name), follow_symlinks=False)
                except OSError as e:
                    self.assertIn(e.errno, (errno.EPERM, errno.EOPNOTSUPP, errno.ENODATA))
                else:
                    self.assertNotIn('user.secret', names)
                try:
                    v = os.getxattr(self.m(name), 'user.secret', follow_symlinks=False)
                except OSError as e:
                    self.assertIn(e.errno, (errno.ENODATA, errno.EPERM, errno.EOPNOTSUPP))
                else:
                    self.assertNoMarker(v, 'getxattr on link %s' % name)

    def test_relative_links_out_resolve_on_the_client(self):
        # mnt/l -> ../secret and mnt/d2 -> ../outside_dir resolve in the
        # client's namespace (TOP/client), where nothing exists.
        for path in (self.m('l'), self.m('d2', 'file'), self.m('sub', '..', 'l')):
            with self.subTest(path=path):
                self.assertErrno(errno.ENOENT, self.read_via_mount, path)
        self.assertErrno(errno.ENOENT, os.listdir, self.m('d2'))
        self.assertErrno(errno.ENOENT, os.stat, self.m('d2', 'file'))
        self.assertErrno(errno.ENOENT, os.open, self.m('d2') + '/', os.O_RDONLY | os.O_DIRECTORY)

    def test_absolute_links_leave_the_mount(self):
        # The client follows an absolute link to its own /: legal, and not
        # through the mount, so whatever it reads comes from another device.
        for name in ('s', 'd3/file', 'm'):
            with self.subTest(link=name):
                fd = os.open(self.m(name), os.O_RDONLY)
                try:
                    self.assertNotEqual(os.fstat(fd).st_dev, self.mount.dev)
                finally:
                    os.close(fd)

    def test_setattr_on_a_link_changes_the_link(self):
        # utimensat/lchown with AT_SYMLINK_NOFOLLOW send SETATTR for the
        # link's own nodeid: a server that followed the host link would
        # change the secret or the directory outside.
        before_out = os.stat(self.outside)
        before_sec = os.stat(self.secret)
        for name in ('d3', 's', 'm', 'l', 'd2'):
            with self.subTest(link=name):
                os.utime(self.m(name), ns=(1_000_000_000, 2_000_000_000),
                         follow_symlinks=False)
                self.assertEqual(os.lstat(self.h(name)).st_mtime_ns, 2_000_000_000)
                # Strict identity keeps a link's owner in an xattr the host
                # may not allow on symlinks: a refusal is fine, a change
                # elsewhere is not.
                try:
                    os.chown(self.m(name), 4321, 4321, follow_symlinks=False)
                except OSError as e:
                    self.assertIn(e.errno, (errno.EPERM, errno.EOPNOTSUPP), errname(e.errno))
                else:
                    self.assertEqual(os.lstat(self.m(name)).st_uid, 4321)
        after_out, after_sec = os.stat(self.outside), os.stat(self.secret)
        for b, a, what in ((before_out, after_out, 'outside_dir'),
                           (before_sec, after_sec, 'secret')):
            self.assertEqual((b.st_mtime_ns, b.st_uid, b.st_gid, b.st_mode, b.st_ctime_ns),
                             (a.st_mtime_ns, a.st_uid, a.st_gid, a.st_mode, a.st_ctime_ns),
                             'ESCAPE: SETATTR on a link changed %s' % what)

    def test_writes_never_reach_outside(self):
        # Creating and writing next to, and "through", the links.
        for name in ('l', 's', 'm', 'd2', 'd3'):
            with self.subTest(link=name):
                self.assertErrno({errno.EEXIST}, os.open, self.m(name),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                self.assertErrno({errno.ELOOP}, os.open, self.m(name),
                                 os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
                self.assertErrno({errno.ELOOP}, os.open, self.m(name),
                                 os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        # mkdir/rename/unlink of the links themselves act on the links.
        os.rename(self.m('s'), self.m('s-renamed'))
        self.assertTrue(os.path.islink(self.h('s-renamed')))
        os.unlink(self.m('s-renamed'))
        self.assertFalse(os.path.lexists(self.h('s-renamed')))
        os.unlink(self.m('d3'))
        self.assertFalse(os.path.lexists(self.h('d3')))

    def test_magic_links(self):
        # /proc magic links placed in the share are plain symlinks to the
        # server: text only.  Reading them on the client resolves the
        # *client's* /proc, never the server's fds.
        self.assertEqual(os.readlink(self.m('fdlink')), '/proc/self/fd/0')
        self.assertEqual(os.readlink(self.m('cwdlink')), '/proc/self/cwd')
        fd = os.open(self.m('cwdlink'), os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.assertEqual(os.fstat(fd).st_ino, os.stat(os.getcwd()).st_ino)
        finally:
            os.close(fd)

    # -- hard links and renames --------------------------------------------

    def test_hard_links(self):
        os.link(self.h('file.txt'), self.h('hl'))  # host-made: fine
        st = os.stat(self.m('hl'))
        self.assertEqual(st.st_nlink, 2)
        self.assertEqual(read_file(self.m('hl')), b'inside\n')
        os.link(self.m('file.txt'), self.m('via-mount'))  # through the mount: fine
        self.assertEqual(os.stat(self.h('via-mount')).st_ino, os.stat(self.h('file.txt')).st_ino)
        self.assertEqual(os.stat(self.h('file.txt')).st_nlink, 3)
        # Across the mount boundary, in either direction: EXDEV.
        self.assertErrno(errno.EXDEV, os.link, self.secret, self.m('stolen'))
        self.assertErrno(errno.EXDEV, os.link, self.m('file.txt'), os.path.join(self.client, 'x'))
        self.assertErrno({errno.ENOENT, errno.EXDEV}, os.link, self.m('..', 'secret'),
                         self.m('stolen'))
        # linkat without AT_SYMLINK_FOLLOW links the symlink itself...
        os.link(self.m('s'), self.m('s2'), follow_symlinks=False)
        self.assertTrue(os.path.islink(self.h('s2')))
        self.assertEqual(os.readlink(self.h('s2')), self.secret)
        # ...and with AT_SYMLINK_FOLLOW the client follows, off the mount.
        # (Python calls plain link(2), which never follows, unless a dir_fd
        # is given: then linkat with the flag.)
        root = os.open(self.mnt, os.O_PATH | os.O_DIRECTORY)
        try:
            self.assertErrno(errno.EXDEV, os.link, 's', 's3', src_dir_fd=root, dst_dir_fd=root,
                             follow_symlinks=True)
            self.assertErrno(errno.ENOENT, os.link, 'l', 'l3', src_dir_fd=root, dst_dir_fd=root,
                             follow_symlinks=True)
            os.link('file.txt', 'via-linkat', src_dir_fd=root, dst_dir_fd=root,
                    follow_symlinks=True)
        finally:
            os.close(root)
        self.assertEqual(os.stat(self.h('file.txt')).st_nlink, 4)
        self.assertFalse(os.path.lexists(self.h('l3')))
        self.assertFalse(os.path.lexists(self.h('stolen')))
        self.assertFalse(os.path.lexists(self.h('s3')))

    def test_rename_out_of_the_share(self):
        self.assertErrno(errno.EXDEV, os.rename, self.m('file.txt'),
                         os.path.join(self.client, 'out'))
        self.assertEqual(read_file(self.h('file.txt')), b'inside\n')
        self.assertErrno(errno.EXDEV, os.rename, self.m('sub'), os.path.join(self.client, 'out'))
        self.assertTrue(os.path.isdir(self.h('sub')))
        self.assertErrno(errno.EXDEV, os.rename, self.secret, self.m('stolen'))
        self.assertFalse(os.path.lexists(self.h('stolen')))
        # (The kernel sees two mounts before it looks for the name.)
        self.assertErrno({errno.ENOENT, errno.EXDEV}, os.rename, self.m('..', 'secret'),
                         self.m('stolen'))

    # -- a mount point under the share ---------------------------------------

    def _tmpfs_in_share(self, name):
        path = self.h(name)
        os.makedirs(path, exist_ok=True)
        self.mount_tmpfs(path)
        write_file(os.path.join(path, 'mounted-' + self.marker), self.marker)
        os.mkdir(os.path.join(path, 'dir-' + self.marker))
        return path

    def _assert_mount_hidden(self, name):
        path = self.m(name)
        try:
            names = os.listdir(path)
        except OSError as e:
            self.assertIn(e.errno, (errno.EXDEV, errno.EACCES, errno.EPERM, errno.ENOENT,
                                    errno.ELOOP, errno.EIO), errname(e.errno))
        else:
            self.assertNoMarker(repr(names), 'listing of a mount point under the share')
        for entry in ('mounted-' + self.marker, 'dir-' + self.marker):
            try:
                fd = os.open(os.path.join(path, entry), os.O_PATH)
            except OSError:
                continue
            try:
                on_mount = os.fstat(fd).st_dev == self.mount.dev
            finally:
                os.close(fd)
            self.assertFalse(on_mount, 'ESCAPE: %s found through the mount' % entry)

    def test_mount_under_share_after_start(self):
        self._tmpfs_in_share('sub')
        self._assert_mount_hidden('sub')
        # The rest of the share still works.
        self.assertEqual(read_file(self.m('file.txt')), b'inside\n')

    def test_mount_under_share_before_lookup(self):
        self._tmpfs_in_share('fresh')
        self._assert_mount_hidden('fresh')
        self.assertErrno({errno.ENOENT, errno.EXDEV, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                          errno.EIO},
                         os.open, self.m('fresh', 'new'), os.O_WRONLY | os.O_CREAT, 0o644)
        self.assertEqual(sorted(os.listdir(self.h('fresh'))),
                         sorted(['mounted-' + self.marker, 'dir-' + self.marker]))

    def test_bind_mount_under_share(self):
        # A bind mount of a directory outside, on the same file system: only
        # RESOLVE_NO_XDEV (or a mount id check) tells it from a directory.
        path = self.h('bound')
        os.mkdir(path)
        subprocess.run(['mount', '--bind', self.outside, path], check=True)
        self.extra_mounts.append(path)
        self._assert_mount_hidden('bound')
        self.assertErrno({errno.ENOENT, errno.EXDEV, errno.EACCES, errno.EPERM, errno.EIO},
                         self.read_via_mount, self.m('bound', 'file'))

    # -- the host swaps a directory for a symlink while the client works -----

    def test_directory_swapped_for_symlink(self):
        dirp, tmp = self.h('dir'), self.h('dir.tmp')
        os.mkdir(dirp)
        write_file(os.path.join(dirp, 'file'), 'inside-file\n')
        stop = threading.Event()
        swaps = [0]
        errors = []

        def swapper():
            targets = ['../outside_dir', self.outside, '/proc/self/root' + self.outside]
            i = 0
            try:
                while not stop.is_set():
                    os.rename(dirp, tmp)
                    os.symlink(targets[i % len(targets)], dirp)
                    time.sleep(0.0005)
                    os.unlink(dirp)
                    os.rename(tmp, dirp)
                    i += 1
                    swaps[0] = i
            except Exception as e:  # reported by the main thread
                errors.append(e)

        seen = {'reads': 0, 'lists': 0}

        def client(held):
            try:
                while not stop.is_set():
                    try:
                        if held is not None:
                            data = self.read_via_mount('file', dir_fd=held)
                            names = os.listdir(held)
                        else:
                            data = self.read_via_mount(self.m('dir', 'file'))
                            fd = os.open(self.m('dir'), os.O_RDONLY | os.O_DIRECTORY)
                            try:
                                names = os.listdir(fd) if os.fstat(fd).st_dev == \
                                    self.mount.dev else []
                            finally:
                                os.close(fd)
                        self.assertNoMarker(data, 'reading dir/file during swaps')
                        self.assertNoMarker(repr(names), 'listing dir during swaps')
                        seen['reads'] += 1
                        seen['lists'] += 1
                    except OSError:
                        pass
            except Exception as e:
                errors.append(e)

        # One client walks the path each time, one holds the directory open.
        held = os.open(self.m('dir'), os.O_RDONLY | os.O_DIRECTORY)
        threads = [threading.Thread(target=swapper), threading.Thread(target=client, args=(None,)),
                   threading.Thread(target=client, args=(held,))]
        for t in threads:
            t.start()
        time.sleep(float(os.environ.get('MSB_TEST_RACE_SECONDS', '3')))
        stop.set()
        for t in threads:
            t.join()
        os.close(held)
        if errors:
            raise errors[0]
        self.assertGreater(swaps[0], 10)
        self.assertGreater(seen['reads'], 10)
        self.assertTrue(os.path.isdir(dirp) and not os.path.islink(dirp))


class EscapeTests(EscapeBase):
    """openat2(RESOLVE_IN_ROOT|...) available."""


class EscapeTestsNoOpenat2(EscapeBase):
    """The server's fallback when openat2 fails with ENOSYS."""
    HARNESS_ARGS = ['--no-openat2']
    EXPECT_LOG = ('openat2', 1)


del EscapeBase

if __name__ == '__main__':
    fusetest.main()
