# SPDX-License-Identifier: Apache-2.0
"""Run the storage suites against a built msb-fusemount.

    /usr/bin/python3 tests/storage/run.py BUILD/tests/storage/msb-fusemount [unittest args]

With no test names, every suite runs (test_harness, test_escape,
test_readonly, test_identity, test_random_ops, test_readdir).  Examples:

    run.py $H test_escape                     one suite
    run.py $H -k NoOpenat2                    the openat2-fallback variants
    run.py $H test_random_ops.RandomOpsIdentityOff -v
    MSB_TEST_SEED=123 MSB_TEST_OPS=5000 run.py $H test_random_ops

Every suite runs twice where the kernel has FUSE over io_uring (Linux
6.14+): over /dev/fuse, then over io_uring (the fuse module's enable_uring
on for that pass, and back as it was after); MSB_TEST_TRANSPORT=dev|uring
runs one.

Exit 77 (skipped) when not root, without /dev/fuse, or while the storage
module's server is not built yet (its share_open says so).
"""
import contextlib
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SUITES = ['test_harness', 'test_escape', 'test_readonly', 'test_identity', 'test_random_ops',
          'test_readdir']


def server_missing(harness):
    """The share_open message when the module has no server yet, else None."""
    with tempfile.TemporaryDirectory(prefix='msb-storage-probe-') as top:
        share, mnt = os.path.join(top, 'share'), os.path.join(top, 'mnt')
        os.mkdir(share)
        os.mkdir(mnt)
        p = subprocess.Popen([harness, share, mnt], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if line == 'ready\n':
            p.terminate()
        _, err = p.communicate(timeout=30)
        if p.returncode != 0 and 'not built' in err and 'share_open' in err:
            return err.strip()
        return None


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    harness = os.path.abspath(sys.argv[1])
    os.environ['MSB_FUSEMOUNT'] = harness
    sys.path.insert(0, HERE)
    import fusetest
    why = fusetest.can_run()
    if why:
        print('storage suites skipped: %s' % why)
        return 77
    missing = server_missing(harness)
    if missing:
        print('storage suites skipped: %s' % missing)
        return 77
    args = sys.argv[2:]
    names = [a for i, a in enumerate(args)
             if not a.startswith('-') and (i == 0 or args[i - 1] != '-k')]
    if not names:
        args += SUITES
    os.chdir(HERE)  # unittest imports the suites by name, from here
    sys.dont_write_bytecode = True
    ok = True
    for transport in transports():
        print('== storage suites over %s' % TRANSPORTS[transport], flush=True)
        os.environ['MSB_TEST_TRANSPORT'] = transport
        with fuse_uring(transport == 'uring'):
            prog = unittest.main(module=None, argv=[sys.argv[0]] + args, exit=False,
                                 verbosity=2)
        ok = ok and prog.result.wasSuccessful()
    return 0 if ok else 1


TRANSPORTS = {'dev': '/dev/fuse', 'uring': 'FUSE over io_uring'}


def transports():
    """/dev/fuse always; FUSE over io_uring too where the kernel has it (6.14+).

    MSB_TEST_TRANSPORT=dev|uring runs one pass only."""
    want = os.environ.get('MSB_TEST_TRANSPORT')
    if want:
        return [want]
    import fusetest
    why = fusetest.uring_unavailable()
    if not why:
        return ['dev', 'uring']
    print('storage suites: %s; the /dev/fuse pass only' % why, flush=True)
    return ['dev']


@contextlib.contextmanager
def fuse_uring(on):
    """The fuse module's enable_uring on for a pass, and as it was afterwards."""
    import fusetest
    before = fusetest.set_enable_uring('Y') if on else None
    try:
        yield
    finally:
        if before is not None:
            fusetest.set_enable_uring(before)


if __name__ == '__main__':
    sys.exit(main())
