/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-thread-class seccomp filters (core/seccomp-filters.c), through the very
 * function host->thread_create calls (msb_thread_start): each case runs one
 * system call in a module thread of a class, in a child process, and checks
 * that the child was killed by SIGSYS (refused) or finished normally
 * (allowed: the call ran, whatever it returned).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <seccomp.h>

#include <msb/msb-plugin.h>

#include "host.h"
#include "seccomp-filters.h"

enum outcome { ALLOWED, KILLED };

static char tmpdir[64];

static void *nothing(void *arg)
{
	(void)arg;
	return NULL;
}

/* Each case: one call, made from inside a module thread. */
static int pipefd[2] = {-1, -1};
static int devnull = -1;

static void *c_write(void *a)
{
	(void)a;
	(void)!write(pipefd[1], "x", 1);
	return NULL;
}
static void *c_kvm_run_ioctl(void *a)
{
	(void)a;
	(void)ioctl(devnull, KVM_RUN, 0); /* ENOTTY: allowed, not a KVM fd */
	return NULL;
}
static void *c_kvm_create_vm_ioctl(void *a)
{
	(void)a;
	(void)ioctl(devnull, KVM_CREATE_VM, 0);
	return NULL;
}
static void *c_open(void *a)
{
	(void)a;
	(void)open("/dev/null", O_RDONLY);
	return NULL;
}
static void *c_socket(void *a)
{
	(void)a;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s >= 0)
		close(s);
	return NULL;
}
static void *c_execve(void *a)
{
	(void)a;
	char *const argv[] = {"/bin/true", NULL};
	execve("/bin/true", argv, NULL);
	return NULL;
}
static void *c_fork(void *a)
{
	(void)a;
	pid_t p = fork();
	if (p == 0)
		_exit(0);
	if (p > 0)
		waitpid(p, NULL, 0);
	return NULL;
}
static void *c_thread(void *a)
{
	(void)a;
	pthread_t t;
	if (pthread_create(&t, NULL, nothing, NULL) == 0)
		pthread_join(t, NULL);
	return NULL;
}
static void *c_mmap_rw(void *a)
{
	(void)a;
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED)
		munmap(p, 4096);
	return NULL;
}
static void *c_mmap_exec(void *a)
{
	(void)a;
	(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return NULL;
}
static void *c_mprotect_exec(void *a)
{
	(void)a;
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	(void)mprotect(p, 4096, PROT_READ | PROT_EXEC);
	return NULL;
}
static void *c_x32(void *a)
{
	(void)a;
	(void)syscall(0x40000000 | SYS_getpid); /* the x32 ABI */
	return NULL;
}
static void *c_int80(void *a)
{
	(void)a;
	long r = 20; /* i386 getpid, through the 32-bit entry point */
	__asm__ volatile("int $0x80" : "+a"(r) : : "memory");
	return NULL;
}
/* NAME in the test's scratch directory. */
static const char *in_tmp(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
	return buf;
}
static void *c_mknod_fifo(void *a)
{
	(void)a;
	char p[128];
	(void)mknodat(AT_FDCWD, in_tmp(p, sizeof(p), "fifo"), S_IFIFO | 0600, 0);
	return NULL;
}
static void *c_mknod_chr(void *a)
{
	(void)a;
	char p[128];
	(void)mknodat(AT_FDCWD, in_tmp(p, sizeof(p), "null"), S_IFCHR | 0600, makedev(1, 3));
	return NULL;
}
static void *c_mknod_blk(void *a)
{
	(void)a;
	char p[128];
	(void)syscall(SYS_mknod, in_tmp(p, sizeof(p), "blk"), S_IFBLK | 0600, makedev(7, 0));
	return NULL;
}
static void *c_unshare(void *a)
{
	(void)a;
	(void)unshare(CLONE_NEWNET);
	return NULL;
}
static void *c_setns_net(void *a)
{
	(void)a;
	(void)setns(-1, CLONE_NEWNET); /* EBADF: allowed for a proxy */
	return NULL;
}
static void *c_setns_any(void *a)
{
	(void)a;
	(void)setns(-1, 0);
	return NULL;
}
static void *c_mount(void *a)
{
	(void)a;
	(void)mount("none", "/nonexistent", "tmpfs", 0, NULL);
	return NULL;
}
static void *c_open_by_handle(void *a)
{
	(void)a;
	(void)syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY);
	return NULL;
}
static void *c_io_uring(void *a)
{
	(void)a;
	(void)syscall(SYS_io_uring_setup, 1, NULL);
	return NULL;
}
static void *c_setuid(void *a)
{
	(void)a;
	(void)syscall(SYS_setuid, 0); /* raw: not glibc's all-threads setxid */
	return NULL;
}
static void *c_ptrace(void *a)
{
	(void)a;
	(void)syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0);
	return NULL;
}
static void *c_bpf(void *a)
{
	(void)a;
	(void)syscall(SYS_bpf, 0, NULL, 0);
	return NULL;
}
static void *c_tiocsti(void *a)
{
	(void)a;
	char ch = 'x';
	(void)ioctl(devnull, TIOCSTI, &ch);
	return NULL;
}

static void *c_tiocsti_high(void *a)
{
	(void)a;
	char ch = 'x';
	/* The kernel takes the command as 32 bits; the filter must too. */
	(void)syscall(SYS_ioctl, devnull, (1ul << 32) | TIOCSTI, &ch);
	return NULL;
}

/* The supervisor's main thread: its filter goes on with msb_seccomp_enter, not thread_create. */
static void *(*confined_fn)(void *);
static void *confined(void *a)
{
	char why[200];
	if (msb_seccomp_enter(MSB_SECCOMP_SUPERVISOR, why, sizeof(why)) < 0)
		_exit(101);
	return confined_fn(a);
}

/* Run fn in a thread of thread_class, in a child; how did the child end? */
static enum outcome run_case(int thread_class, void *(*fn)(void *))
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core);
		unsigned long tid;
		pthread_t t;
		if (thread_class == MSB_SECCOMP_SUPERVISOR) {
			confined_fn = fn;
			if (pthread_create(&t, NULL, confined, NULL) != 0)
				_exit(100);
			pthread_join(t, NULL);
			_exit(0);
		}
		int r = msb_thread_start(thread_class, "msb-test", fn, NULL, &tid);
		if (r < 0)
			_exit(100);
		pthread_join((pthread_t)tid, NULL);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st)) {
		assert_int_equal(WTERMSIG(st), SIGSYS);
		return KILLED;
	}
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	return ALLOWED;
}

#define ALLOWS(cls, fn) assert_int_equal(run_case(cls, fn), ALLOWED)
#define KILLS(cls, fn)	assert_int_equal(run_case(cls, fn), KILLED)

static void test_vcpu(void **state)
{
	(void)state;
	const int c = MSB_THREAD_VCPU;
	/* What the exit handlers do. */
	ALLOWS(c, c_write);
	ALLOWS(c, c_kvm_run_ioctl);
	ALLOWS(c, c_mmap_rw);
	ALLOWS(c, nothing);
	/* Nothing else. */
	KILLS(c, c_open);
	KILLS(c, c_socket);
	KILLS(c, c_execve);
	KILLS(c, c_fork);
	KILLS(c, c_thread);
	KILLS(c, c_kvm_create_vm_ioctl);
	KILLS(c, c_tiocsti);
	KILLS(c, c_mmap_exec);
	KILLS(c, c_mprotect_exec);
	KILLS(c, c_x32);
	KILLS(c, c_int80);
	KILLS(c, c_mknod_fifo);
}

static void check_denylist(int c)
{
	/* A module thread's ordinary work. */
	ALLOWS(c, c_write);
	ALLOWS(c, c_open);
	ALLOWS(c, c_socket);
	ALLOWS(c, c_thread); /* clone3 refused with ENOSYS, clone with CLONE_THREAD */
	ALLOWS(c, c_mmap_exec);
	ALLOWS(c, c_mknod_fifo);
	/* What none may do. */
	KILLS(c, c_execve);
	KILLS(c, c_fork);
	KILLS(c, c_mknod_chr);
	KILLS(c, c_mknod_blk);
	KILLS(c, c_unshare);
	KILLS(c, c_setns_any);
	KILLS(c, c_mount);
	KILLS(c, c_open_by_handle);
	KILLS(c, c_io_uring);
	KILLS(c, c_setuid);
	KILLS(c, c_ptrace);
	KILLS(c, c_bpf);
	KILLS(c, c_tiocsti);
	KILLS(c, c_tiocsti_high);
	KILLS(c, c_x32);
	KILLS(c, c_int80);
}

static void test_io(void **state)
{
	(void)state;
	check_denylist(MSB_THREAD_IO);
	KILLS(MSB_THREAD_IO, c_setns_net);
}

static void test_vmm(void **state)
{
	(void)state;
	check_denylist(MSB_THREAD_VMM);
	KILLS(MSB_THREAD_VMM, c_setns_net);
}

static void test_proxy(void **state)
{
	(void)state;
	check_denylist(MSB_THREAD_PROXY);
	/* A proxy enters the sandbox's network namespace, and only that kind. */
	ALLOWS(MSB_THREAD_PROXY, c_setns_net);
}

static void test_supervisor(void **state)
{
	(void)state;
	check_denylist(MSB_SECCOMP_SUPERVISOR);
	/* The network module's helper threads it starts enter the sandbox's namespace. */
	ALLOWS(MSB_SECCOMP_SUPERVISOR, c_setns_net);
	/* msb_thread_start is for module classes only. */
	unsigned long tid;
	assert_int_equal(msb_thread_start(MSB_SECCOMP_SUPERVISOR, "x", nothing, NULL, &tid),
			 -EINVAL);
}

/* Fail closed: when the filter cannot go in, the module's function never runs. */
static int ran;
static void *mark_ran(void *a)
{
	(void)a;
	ran = 1;
	return NULL;
}

static void test_fail_closed(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* A kernel (or container) that refuses seccomp(2) to this process. */
		scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
		if (!ctx ||
		    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(seccomp), 0) < 0 ||
		    seccomp_load(ctx) < 0)
			_exit(100);
		unsigned long tid;
		int r = msb_thread_start(MSB_THREAD_IO, "msb-test", mark_ran, NULL, &tid);
		_exit(r == -EPERM && !ran ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_bad_class(void **state)
{
	(void)state;
	unsigned long tid;
	assert_int_equal(msb_thread_start(0, "x", nothing, NULL, &tid), -EINVAL);
	assert_int_equal(msb_thread_start(MSB_THREAD_PROXY + 1, "x", nothing, NULL, &tid), -EINVAL);
	char why[128];
	assert_int_equal(msb_seccomp_enter(99, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "unknown thread class"));
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/msb-test-seccomp.XXXXXX");
	if (!mkdtemp(tmpdir) || pipe(pipefd) < 0 || (devnull = open("/dev/null", O_RDWR)) < 0) {
		perror("test_seccomp: setup");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vcpu),	   cmocka_unit_test(test_io),
		cmocka_unit_test(test_vmm),	   cmocka_unit_test(test_proxy),
		cmocka_unit_test(test_supervisor), cmocka_unit_test(test_fail_closed),
		cmocka_unit_test(test_bad_class),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	char p[128];
	unlink(in_tmp(p, sizeof(p), "fifo"));
	rmdir(tmpdir);
	return r;
}
