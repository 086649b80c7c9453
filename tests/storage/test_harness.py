# SPDX-License-Identifier: Apache-2.0
"""msb-fusemount's own behaviour: one-line errors and nonzero exits for bad
arguments or a share the module refuses, and a clean exit (no mount, no
temporary directory, no fd left open) on SIGTERM, SIGINT or an unmount from
outside, even while a client holds a file open on the mount.
"""
import errno
import fcntl
import glob
import os
import signal
import subprocess
import time

import fusetest
from fusetest import read_file, write_file


def run_harness(args, env=None):
    p = subprocess.run([fusetest.harness_path()] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


def own_fds_targets():
    out = {}
    for fd in own_fds():
        try:
            out[fd] = os.readlink('/proc/self/fd/%d' % fd)
        except OSError as e:
            out[fd] = str(e)
    return out


def own_fds():
    # The listing's own directory fd is closed again by the time we check.
    out = []
    for n in os.listdir('/proc/self/fd'):
        try:
            fcntl.fcntl(int(n), fcntl.F_GETFD)
        except OSError:
            continue
        out.append(int(n))
    return sorted(out)


class HarnessErrors(fusetest.StorageTestCase):
    START_MOUNT = False

    def assertOneLineError(self, args, rc, contains, env=None):
        got_rc, out, err = run_harness(args, env)
        self.assertEqual(got_rc, rc, 'args %r: stderr %r' % (args, err))
        self.assertEqual(out, '')
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, 'args %r: stderr %r' % (args, err))
        self.assertTrue(lines[0].startswith('msb-fusemount: '), lines[0])
        self.assertIn(contains, lines[0])
        self.assertEqual(fusetest.mounts_under(self.top), [])

    def test_bad_arguments(self):
        cases = [
            ([], 'expected HOSTDIR and MOUNTPOINT'),
            ([self.share], 'expected HOSTDIR and MOUNTPOINT'),
            ([self.share, self.mnt, 'extra'], 'expected HOSTDIR and MOUNTPOINT'),
            (['--bogus', self.share, self.mnt], "unknown option '--bogus'"),
            (['-x', self.share, self.mnt], "unknown option '-x'"),
            (['--identity', 'loose', self.share, self.mnt], "'loose'"),
            (['--identity'], "needs an argument"),
            (['--threads', '0', self.share, self.mnt], "--threads"),
            (['--threads', '65', self.share, self.mnt], "--threads"),
            (['--threads', 'four', self.share, self.mnt], "--threads"),
        ]
        for args, contains in cases:
            with self.subTest(args=args):
                self.assertOneLineError(args, 2, contains)

    def test_setup_failures(self):
        file_share = os.path.join(self.hostroot, 'plain-file')
        write_file(file_share, 'x')
        empty = os.path.join(self.top, 'no-modules')
        os.mkdir(empty)
        cases = [
            ([os.path.join(self.top, 'missing'), self.mnt], {}, 'No such file'),
            ([self.share, os.path.join(self.top, 'missing')], {}, 'No such file'),
            ([self.share, file_share], {}, 'not a directory'),
            # The module refuses to share a regular file (or, before the
            # server exists, anything at all).
            ([file_share, self.mnt], {}, 'share_open: '),
            ([self.share, self.mnt], {'MSB_PLUGIN_PATH': empty}, 'no storage module'),
        ]
        for args, env, contains in cases:
            with self.subTest(args=args, env=env):
                self.assertOneLineError(args, 1, contains, env)
        self.assertEqual(glob.glob('/tmp/msb-fusemount.*.%s' % ('X' * 6)), [])


class HarnessLifecycle(fusetest.StorageTestCase):
    START_MOUNT = False

    def populate(self):
        write_file(self.h('f'), 'content\n')

    def leftovers(self, pid):
        return glob.glob('/tmp/msb-fusemount.%d.*' % pid)

    def check_clean_exit(self, sig):
        fds = own_fds()
        m = self.start_mount()
        pid = m.proc.pid
        self.assertIn(os.path.realpath(self.mnt), fusetest.mount_points())
        self.assertEqual(len(self.leftovers(pid)), 1, 'the instance state directory')
        self.assertEqual(read_file(self.m('f')), b'content\n')
        rc = m.stop(sig)
        self.assertEqual(rc, 0, m.stderr())
        self.assertNotIn(os.path.realpath(self.mnt), fusetest.mount_points())
        self.assertEqual(self.leftovers(pid), [])
        self.assertNotIn('fd leak', m.stderr())
        # (The test keeps one fd: the harness's stderr, for messages.)
        self.assertEqual([fd for fd in own_fds() if fd != m._err.fileno()], fds,
                         'the test process gained fds: %r' % own_fds_targets())

    def test_sigterm(self):
        self.check_clean_exit(signal.SIGTERM)

    def test_sigint(self):
        self.check_clean_exit(signal.SIGINT)

    def test_sigterm_with_a_busy_mount(self):
        m = self.start_mount(['--threads', '2'])
        pid = m.proc.pid
        fd = os.open(self.m('f'), os.O_RDONLY)
        dfd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.assertEqual(os.pread(fd, 7, 0), b'content')
            t0 = time.monotonic()
            rc = m.stop(signal.SIGTERM, timeout=15)
            self.assertLess(time.monotonic() - t0, 10)
            self.assertEqual(rc, 0, m.stderr())
            self.assertNotIn(os.path.realpath(self.mnt), fusetest.mount_points())
            self.assertEqual(self.leftovers(pid), [])
            # The connection is gone: the held fds fail instead of hanging.
            # (A create always reaches the server; reads may be cached.)
            with self.assertRaises(OSError) as cm:
                os.close(os.open('new', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd))
            self.assertIn(cm.exception.errno, (errno.ENOTCONN, errno.EIO))
            self.assertFalse(os.path.exists(self.h('new')))
        finally:
            for f in (fd, dfd):
                try:
                    os.close(f)
                except OSError as e:  # FLUSH on a dead connection
                    self.assertEqual(e.errno, errno.ENOTCONN)

    def test_unmount_from_outside(self):
        m = self.start_mount()
        pid = m.proc.pid
        subprocess.run(['umount', self.mnt], check=True)
        try:
            m.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.fail('msb-fusemount did not exit after its mount went away')
        self.assertEqual(m.stop(), 0, m.stderr())
        self.assertEqual(self.leftovers(pid), [])

    def test_one_thread(self):
        self.start_mount(['--threads', '1'])
        self.assertEqual(read_file(self.m('f')), b'content\n')
        write_file(self.m('g'), b'y' * (3 << 20))
        self.assertEqual(len(read_file(self.m('g'))), 3 << 20)


if __name__ == '__main__':
    fusetest.main()
