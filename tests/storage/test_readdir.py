# SPDX-License-Identifier: Apache-2.0
"""Directory streams: a directory read while its entries are removed.

`rm -rf` reads a directory and unlinks each entry as it goes.  On host file
systems whose readdir cookies are positions (tmpfs, and overlayfs over it: the
KVM test host's root), a server that seeks to the cookie on every READDIR
skips entries once earlier ones are gone, and the directory is "not empty"
at the end.  Each case runs on the share's own file system and on a tmpfs.
Only a host kernel whose tmpfs cookies are positions (before Linux 6.6, like
the KVM test host's 6.1) shows the bug here; tests/e2e/suite.sh runs the same
`rm -rf` from a guest on a share on the test host's overlayfs.
"""
import os
import subprocess

import fusetest

COUNT = 1500  # several READDIR replies' worth


class ReaddirWhileUnlinking(fusetest.StorageTestCase):
    TMPFS = False

    def populate(self):
        if self.TMPFS:
            subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'msb-test', self.share],
                           check=True)
            self.extra_mounts.append(self.share)
        os.mkdir(self.h('d'))
        for i in range(COUNT):
            open(self.h('d', 'file-with-a-longish-name-%05d' % i), 'w').close()

    def test_unlink_while_reading(self):
        d = self.m('d')
        removed = 0
        with os.scandir(d) as it:
            for e in it:
                os.unlink(os.path.join(d, e.name))
                removed += 1
        self.assertEqual(removed, COUNT)
        self.assertEqual(os.listdir(d), [])
        os.rmdir(d)
        self.assertFalse(os.path.exists(self.h('d')))

    def test_every_entry_once(self):
        names = os.listdir(self.m('d'))
        self.assertEqual(len(names), COUNT)
        self.assertEqual(len(set(names)), COUNT)

    def test_rewind(self):
        fd = os.open(self.m('d'), os.O_RDONLY | os.O_DIRECTORY)
        try:
            first = sorted(os.listdir(fd))
            os.lseek(fd, 0, os.SEEK_SET)
            self.assertEqual(sorted(os.listdir(fd)), first)
        finally:
            os.close(fd)


class ReaddirWhileUnlinkingTmpfs(ReaddirWhileUnlinking):
    TMPFS = True


class ReaddirWhileUnlinkingNoOpenat2(ReaddirWhileUnlinkingTmpfs):
    HARNESS_ARGS = ['--no-openat2']


if __name__ == '__main__':
    fusetest.main()
