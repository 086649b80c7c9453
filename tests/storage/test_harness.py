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


# What a request on a FUSE connection that has gone away fails with.
DEAD_CONNECTION = (errno.ENOTCONN, errno.EIO, errno.ECONNABORTED)


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
            (['--transport', 'splice', self.share, self.mnt], "expected auto, uring or dev"),
            (['--transport', 'uring', '--locks', 'host', self.share, self.mnt],
             "not with --locks host"),
            (['--poll-us', '-1', self.share, self.mnt], "--poll-us: expected 0..1000"),
            (['--poll-us', '1001', self.share, self.mnt], "--poll-us: expected 0..1000"),
            (['--poll-us', 'fast', self.share, self.mnt], "--poll-us: expected 0..1000"),
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
            # ECONNABORTED: the kernel's answer for a request its io_uring
            # queues were still holding when the connection went.
            with self.assertRaises(OSError) as cm:
                os.close(os.open('new', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd))
            self.assertIn(cm.exception.errno, DEAD_CONNECTION)
            self.assertFalse(os.path.exists(self.h('new')))
        finally:
            for f in (fd, dfd):
                try:
                    os.close(f)
                except OSError as e:  # FLUSH on a dead connection
                    self.assertIn(e.errno, DEAD_CONNECTION)

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


def threads_sum(pid, read):
    """read(task_dir) summed over the process's threads (threads that end meanwhile are skipped)."""
    total = 0
    for t in glob.glob('/proc/%d/task/*' % pid):
        try:
            total += read(t)
        except OSError:
            pass
    return total


def sleeps(task):
    """How often a thread has slept (voluntary context switches; a yield is not one)."""
    with open(task + '/status') as f:
        for line in f:
            if line.startswith('voluntary_ctxt_switches:'):
                return int(line.split()[1])
    return 0


def cpu_ticks(task):
    with open(task + '/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class HarnessPolling(fusetest.StorageTestCase):
    """--poll-us (default 50): the /dev/fuse reader polls before it sleeps, so
    a serial client's requests are taken without a wakeup each; and an idle
    mount stops polling at once."""
    START_MOUNT = False
    FILES = 200
    ROUNDS = 5

    def populate(self):
        for i in range(self.FILES):
            write_file(self.h('f%d' % i), 'x')

    def burst(self):
        """open + close of every file, ROUNDS times: two requests each (OPEN, RELEASE)."""
        for _ in range(self.ROUNDS):
            for i in range(self.FILES):
                os.close(os.open(self.m('f%d' % i), os.O_RDONLY))

    def sleeps_during_burst(self, args):
        m = self.start_mount(['--transport', 'dev'] + args)
        self.burst()  # lookups and attributes cached; the window opened
        before = threads_sum(m.proc.pid, sleeps)
        self.burst()
        got = threads_sum(m.proc.pid, sleeps) - before
        idle_from = threads_sum(m.proc.pid, cpu_ticks)
        time.sleep(1)
        idle_ticks = threads_sum(m.proc.pid, cpu_ticks) - idle_from
        self.assertEqual(m.stop(), 0, m.stderr())
        return got, idle_ticks

    def test_polling_saves_wakeups_and_stops_when_idle(self):
        requests = 2 * self.FILES * self.ROUNDS
        slept, idle = self.sleeps_during_burst([])
        slept_off, idle_off = self.sleeps_during_burst(['--poll-us', '0'])
        # Without polling the reader sleeps for about every OPEN (a RELEASE
        # is often queued before it reads again): about half the requests.
        self.assertGreater(slept_off, requests // 4, (slept_off, requests))
        # With it, requests that follow within the window are taken awake.
        self.assertLess(slept, slept_off // 4, (slept, slept_off, requests))
        # Idle for a second, the harness uses (next to) no CPU either way: a
        # reader that kept polling would use the whole second (100 ticks).
        ticks = os.sysconf('SC_CLK_TCK')
        self.assertLessEqual(idle, ticks // 20, 'ticks used while idle, polling')
        self.assertLessEqual(idle_off, ticks // 20, 'ticks used while idle, no polling')


class HarnessSplice(fusetest.StorageTestCase):
    """READ replies by reference (the default over /dev/fuse): the harness
    takes the server's file range (handle_ref, ABI 1.4) and splices it into
    /dev/fuse.  Every byte is the host file's, at a file's end and after the
    file shrank under the client, exactly as by value (--no-splice); and the
    replies really went by reference (the --verbose " ref N" lines)."""
    START_MOUNT = False
    SIZES = [0, 1, 4095, 4096, 4097, (128 << 10) + 7, (3 << 20) + 4097]

    def populate(self):
        for n in self.SIZES:
            write_file(self.h('f%d' % n), os.urandom(n))
        write_file(self.h('shrink'), bytes(range(256)) * 4096)  # 1 MiB

    def serve(self, args):
        m = self.start_mount(['--transport', 'dev', '--verbose'] + args)
        for n in self.SIZES:
            self.assertEqual(read_file(self.m('f%d' % n)), read_file(self.h('f%d' % n)),
                             'file of %d bytes' % n)
        # The client still takes the file for 1 MiB long when the host cuts
        # it to 5000 bytes: its READ gets a short reply, which is the end.
        fd = os.open(self.m('shrink'), os.O_RDONLY)
        try:
            self.assertEqual(os.fstat(fd).st_size, 1 << 20)
            os.truncate(self.h('shrink'), 5000)
            got = os.pread(fd, 1 << 20, 0)
        finally:
            os.close(fd)
        self.assertEqual(got, (bytes(range(256)) * 4096)[:5000])
        write_file(self.h('shrink'), bytes(range(256)) * 4096)
        self.assertEqual(m.stop(), 0, m.stderr())
        return [line for line in m.stderr().splitlines() if ' ref ' in line]

    def test_by_reference_and_by_value_agree(self):
        refs = self.serve([])
        self.assertGreater(len(refs), 10, 'READ replies by reference')
        self.assertTrue(all(' op 15 ' in line for line in refs), refs[:5])
        self.assertEqual(self.serve(['--no-splice']), [])


def possible_cpus():
    n = 0
    with open('/sys/devices/system/cpu/possible') as f:
        for part in f.read().strip().split(','):
            a, _, b = part.partition('-')
            n += int(b or a) - int(a) + 1
    return n


class HarnessTransport(fusetest.StorageTestCase):
    """FUSE over io_uring: used where asked and the kernel offers it, refused
    in one line where it does not, and never a silent fallback for "uring"."""
    START_MOUNT = False

    def setUp(self):
        why = fusetest.uring_unavailable()
        if why:
            self.skipTest(why)
        super().setUp()
        before = fusetest.set_enable_uring('N')
        self.addCleanup(fusetest.set_enable_uring, before)

    def populate(self):
        write_file(self.h('f'), 'content\n')

    def serve(self, args):
        """Mount with args (and --verbose), exercise the share, stop; the harness's stderr."""
        m = self.start_mount(args + ['--verbose'])
        self.exercise()
        self.assertEqual(m.stop(), 0, m.stderr())
        return m.stderr()

    def exercise(self):
        self.assertEqual(read_file(self.m('f')), b'content\n')
        write_file(self.m('g'), b'y' * (3 << 20))
        self.assertEqual(len(read_file(self.m('g'))), 3 << 20)
        os.rename(self.m('g'), self.m('h'))
        os.unlink(self.m('h'))
        self.assertEqual(sorted(os.listdir(self.mnt)), ['f'])

    def test_uring_serves_every_request(self):
        fusetest.set_enable_uring('Y')
        err = self.serve(['--transport', 'uring'])
        self.assertIn('transport: io_uring, %d queues' % possible_cpus(), err)
        # After INIT, every request that wants a reply came through a ring.
        after_init = err.split('transport: io_uring', 1)[1]
        ops = [ln for ln in after_init.splitlines() if ' op ' in ln]
        self.assertTrue(any(ln.startswith('msb-fusemount: ring ') for ln in ops), err[-2000:])
        dev_ops = [ln for ln in ops if not ln.startswith('msb-fusemount: ring ')]
        # Only FORGET (2), BATCH_FORGET (42) and INTERRUPT (36) use /dev/fuse then.
        self.assertEqual([ln for ln in dev_ops
                          if ln.split(' op ')[1].split()[0] not in ('2', '42', '36')], [])

    def test_uring_off_is_refused(self):
        fusetest.set_enable_uring('N')
        rc, out, err = run_harness(['--transport', 'uring', self.share, self.mnt])
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, '')
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn('enable_uring is off', err)
        self.assertEqual(fusetest.mounts_under(self.top), [])

    def test_auto_without_uring_serves_dev(self):
        fusetest.set_enable_uring('N')
        err = self.serve(['--transport', 'auto'])
        self.assertIn('transport: /dev/fuse', err)
        self.assertNotIn('msb-fusemount: ring ', err)

    def test_auto_with_host_locks_serves_dev(self):
        fusetest.set_enable_uring('Y')
        err = self.serve(['--locks', 'host'])
        self.assertNotIn('transport: io_uring', err)
        self.assertNotIn('msb-fusemount: ring ', err)

    def test_dev_when_asked(self):
        fusetest.set_enable_uring('Y')
        self.assertNotIn('msb-fusemount: ring ', self.serve(['--transport', 'dev']))


if __name__ == '__main__':
    fusetest.main()
