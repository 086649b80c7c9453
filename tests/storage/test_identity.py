# SPDX-License-Identifier: Apache-2.0
"""Identity suite: how the client's owners and modes map onto host files.

strict (the default): chown/chmod through the mount change what the mount
shows, never the host inode's owner or mode; the server's bookkeeping xattr
is invisible and untouchable through the mount; nothing it creates is ever
setuid/setgid on the host.
off: chmod and chown pass through to the host, but setuid/setgid never land.
"""
import errno
import os
import stat

import fusetest
from fusetest import read_file, write_file

SUID_SGID = stat.S_ISUID | stat.S_ISGID


def host_msb_xattrs(path):
    return [n for n in os.listxattr(path, follow_symlinks=False) if 'msb' in n.lower()]


class StrictIdentity(fusetest.StorageTestCase):
    HARNESS_ARGS = ['--identity', 'strict']

    def populate(self):
        write_file(self.h('hostfile'), 'host\n', 0o644)
        os.mkdir(self.h('hostdir'), 0o755)

    def assertHost(self, name, uid, gid, mode):
        st = os.lstat(self.h(name))
        self.assertEqual((st.st_uid, st.st_gid), (uid, gid), 'host owner of %s' % name)
        self.assertEqual(stat.S_IMODE(st.st_mode), mode,
                         'host mode of %s: %o' % (name, stat.S_IMODE(st.st_mode)))

    def test_chown_chmod_are_virtual(self):
        for name, mode in (('hostfile', 0o644), ('hostdir', 0o755)):
            with self.subTest(name=name):
                os.chown(self.m(name), 1234, 5678)
                os.chmod(self.m(name), 0o640)
                st = os.stat(self.m(name))
                self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                                 (1234, 5678, 0o640))
                self.assertHost(name, 0, 0, mode)
                # The change survives a remount: it is kept on the host.
        self.stop_mount()
        self.start_mount()
        st = os.stat(self.m('hostfile'))
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (1234, 5678, 0o640))
        self.assertHost('hostfile', 0, 0, 0o644)

    def test_created_files(self):
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        fd = os.open(self.m('new'), os.O_WRONLY | os.O_CREAT, 0o4755)
        os.write(fd, b'#!/bin/sh\n')
        os.close(fd)
        os.chmod(self.m('new'), 0o4755)
        os.mkdir(self.m('newdir'), 0o2775)
        os.chmod(self.m('newdir'), 0o2775)
        os.chown(self.m('new'), 1000, 1000)
        os.chmod(self.m('new'), 0o6755)  # after chown, as a guest root would
        for name in ('new', 'newdir'):
            with self.subTest(name=name):
                st = os.lstat(self.h(name))
                self.assertEqual(st.st_mode & SUID_SGID, 0,
                                 'host %s has mode %o: setuid/setgid landed' % (name, st.st_mode))
                self.assertEqual((st.st_uid, st.st_gid), (0, 0))
        self.assertEqual(stat.S_IMODE(os.stat(self.m('new')).st_mode) & 0o777, 0o755)
        self.assertEqual(os.stat(self.m('new')).st_uid, 1000)

    def test_identity_xattr_is_hidden(self):
        os.chown(self.m('hostfile'), 1234, 5678)
        os.chmod(self.m('hostfile'), 0o600)
        write_file(self.m('created'), 'x')
        names = set(host_msb_xattrs(self.h('hostfile'))) | set(host_msb_xattrs(self.h('created')))
        # Whatever the server calls its xattr, it is never visible through the mount.
        for p in ('hostfile', 'created', 'hostdir'):
            with self.subTest(path=p):
                listed = os.listxattr(self.m(p))
                self.assertEqual([n for n in listed if 'msb' in n.lower()], [],
                                 'listxattr through the mount shows %r' % listed)
        # The server documents trusted.msb.owner (as root) and user.msb.owner,
        # and reserves user.msb.* as a whole.
        self.assertEqual(names, {'trusted.msb.owner'}, 'the host xattrs the server wrote')
        for name in names | {'user.msb.owner', 'user.msb.other', 'trusted.msb.other'}:
            with self.subTest(xattr=name):
                before = os.getxattr(self.h('hostfile'), name) if name in names else None
                self.assertErrno({errno.ENODATA, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP},
                                 os.getxattr, self.m('hostfile'), name)
                # Forging an identity: uid 0 and setuid, in a few spellings.
                for forged in (b'0:0:104755', b'\x00' * 16, b''):
                    self.assertErrno({errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EINVAL},
                                     os.setxattr, self.m('hostfile'), name, forged)
                self.assertErrno({errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENODATA},
                                 os.removexattr, self.m('hostfile'), name)
                after = os.getxattr(self.h('hostfile'), name) if name in names else None
                self.assertEqual(before, after, 'the host xattr %s changed' % name)
        st = os.stat(self.m('hostfile'))
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (1234, 5678, 0o600))

    def test_user_xattrs_still_work(self):
        os.setxattr(self.m('hostfile'), 'user.mine', b'v')
        self.assertEqual(os.getxattr(self.m('hostfile'), 'user.mine'), b'v')
        self.assertEqual(os.getxattr(self.h('hostfile'), 'user.mine'), b'v')
        self.assertIn('user.mine', os.listxattr(self.m('hostfile')))
        os.removexattr(self.m('hostfile'), 'user.mine')
        self.assertNotIn('user.mine', os.listxattr(self.h('hostfile')))

    def test_host_xattr_forged_on_host_is_not_an_escalation(self):
        # The host may put anything in a share; through the mount a file is
        # never setuid on the host, whatever the client sees.
        write_file(self.h('planted'), 'x', 0o755)
        os.chmod(self.m('planted'), 0o4755)
        self.assertEqual(os.lstat(self.h('planted')).st_mode & SUID_SGID, 0)
        self.assertEqual(read_file(self.m('planted')), b'x')


class StrictIdentityNoOpenat2(StrictIdentity):
    HARNESS_ARGS = ['--identity', 'strict', '--no-openat2']
    EXPECT_LOG = ('openat2', 1)


class OffIdentity(fusetest.StorageTestCase):
    HARNESS_ARGS = ['--identity', 'off']

    def populate(self):
        write_file(self.h('hostfile'), 'host\n', 0o644)
        os.mkdir(self.h('hostdir'), 0o755)

    def test_chmod_chown_pass_through(self):
        os.chmod(self.m('hostfile'), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.h('hostfile')).st_mode), 0o600)
        os.chown(self.m('hostfile'), 1234, 5678)
        st = os.stat(self.h('hostfile'))
        self.assertEqual((st.st_uid, st.st_gid), (1234, 5678))
        self.assertEqual(os.stat(self.m('hostfile')).st_uid, 1234)
        self.assertEqual(host_msb_xattrs(self.h('hostfile')), [])

    def test_setuid_never_lands(self):
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        fd = os.open(self.m('new'), os.O_WRONLY | os.O_CREAT, 0o6755)
        os.close(fd)
        os.mkdir(self.m('newdir'), 0o2775)
        for name, mode in (('new', 0o4755), ('new', 0o2755), ('new', 0o6777),
                           ('hostfile', 0o4755), ('hostdir', 0o2755), ('newdir', 0o2775)):
            with self.subTest(name=name, mode=oct(mode)):
                try:
                    os.chmod(self.m(name), mode)
                except OSError as e:
                    self.assertIn(e.errno, (errno.EPERM, errno.EACCES))
                hst = os.lstat(self.h(name))
                self.assertEqual(hst.st_mode & SUID_SGID, 0,
                                 'host %s has mode %o' % (name, hst.st_mode))
                self.assertEqual(stat.S_IMODE(hst.st_mode) & 0o777, mode & 0o777)
        for name in ('new', 'newdir'):
            self.assertEqual(os.lstat(self.h(name)).st_mode & SUID_SGID, 0)


if __name__ == '__main__':
    fusetest.main()
