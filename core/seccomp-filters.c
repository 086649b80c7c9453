/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-thread-class seccomp filters (docs/plugin-abi.md, "Threads and seccomp").
 *
 * A vCPU thread runs the guest: everything it does after its first KVM_RUN
 * happens on the guest's behalf, so its filter is an allowlist of what the
 * exit handlers need (KVM_RUN and a few KVM ioctls, reads and writes on fds
 * it already has, futexes, memory without PROT_EXEC) and nothing else: no
 * open, no socket, no exec, no new thread.  The other classes (the event
 * loop, device I/O workers, network proxies) do too many different things
 * for a useful allowlist, so theirs is a denylist of what no module thread
 * ever needs and an attacker would want first: new programs and processes,
 * other processes' memory, mounts and namespaces (a proxy may enter a
 * network namespace once, nothing else), kernel modules, BPF, io_uring
 * (whose operations seccomp never sees), file handles, credentials, device
 * nodes.  Anything refused kills the process: a sandbox whose monitor is
 * subverted dies with it.
 *
 * Each filter is compiled once per process with libseccomp (a binary tree
 * on the call number), exported as BPF and loaded per thread with
 * seccomp(2); x86-64 only, like hv-kvm.  bench/seccomp measures the cost.
 * libseccomp's generated filter also kills other ABIs (i386, x32).
 */
#include "seccomp-filters.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <linux/kvm.h>
#include <msb/msb-plugin.h>

/* The classes, and the supervisor's own main thread once the VM is up (seccomp-filters.h). */
#define NCLASSES (MSB_SECCOMP_SUPERVISOR + 1)

/* What no module thread may do, whatever its class. */
static const char *const denied[] = {
	/* new programs and processes (threads: clone with CLONE_THREAD, below) */
	"execve",
	"execveat",
	"fork",
	"vfork",
	/* other processes */
	"ptrace",
	"process_vm_readv",
	"process_vm_writev",
	"kcmp",
	"pidfd_getfd",
	/* mounts, roots and namespaces (setns: below) */
	"mount",
	"umount2",
	"pivot_root",
	"chroot",
	"move_mount",
	"open_tree",
	"fsopen",
	"fsconfig",
	"fsmount",
	"fspick",
	"mount_setattr",
	"unshare",
	/* the kernel itself */
	"init_module",
	"finit_module",
	"delete_module",
	"kexec_load",
	"kexec_file_load",
	"reboot",
	"swapon",
	"swapoff",
	"acct",
	"syslog",
	"bpf",
	"perf_event_open",
	"userfaultfd",
	"iopl",
	"ioperm",
	"personality",
	"quotactl",
	"quotactl_fd",
	"uselib",
	"settimeofday",
	"clock_settime",
	"clock_adjtime",
	"adjtimex",
	"sethostname",
	"setdomainname",
	"vhangup",
	"lookup_dcookie",
	"fanotify_init",
	/* keys */
	"keyctl",
	"add_key",
	"request_key",
	/* file handles: a way around every path-based check */
	"open_by_handle_at",
	"name_to_handle_at",
	/* credentials */
	"setuid",
	"setgid",
	"setreuid",
	"setregid",
	"setresuid",
	"setresgid",
	"setfsuid",
	"setfsgid",
	"setgroups",
	"capset",
	/* io_uring: its operations never pass through this filter */
	"io_uring_setup",
	"io_uring_enter",
	"io_uring_register",
};

/* A vCPU thread's whole repertoire. */
static const char *const vcpu_allowed[] = {
	"read",		"write",       "readv",		"writev",	   "futex",
	"exit",		"exit_group",  "rt_sigreturn",	"rt_sigprocmask",  "tgkill",
	"tkill",	"getpid",      "gettid",	"madvise",	   "munmap",
	"mremap",	"brk",	       "clock_gettime", "clock_nanosleep", "nanosleep",
	"gettimeofday", "sched_yield", "getrandom",	"restart_syscall",
};

/*
 * The ioctls a vCPU thread makes: KVM_RUN, an interrupt line from a port
 * device, the registers for the log when the guest dies.
 */
static const unsigned long vcpu_ioctls[] = {
	KVM_RUN,
	KVM_GET_REGS,
	KVM_GET_SREGS,
	KVM_IRQ_LINE,
};

struct filter {
	bool built;
	int err; /* negative errno if it could not be built */
	char why[160];
	struct sock_fprog prog;
};

static struct filter filters[NCLASSES];
static pthread_mutex_t build_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const class_names[NCLASSES] = {
	[MSB_THREAD_VMM] = "vmm",
	[MSB_THREAD_VCPU] = "vcpu",
	[MSB_THREAD_IO] = "io",
	[MSB_THREAD_PROXY] = "proxy",
	[MSB_SECCOMP_SUPERVISOR] = "supervisor",
};

const char *msb_seccomp_class_name(int thread_class)
{
	return thread_class > 0 && thread_class < NCLASSES ? class_names[thread_class] : "?";
}

__attribute__((format(printf, 3, 4))) static void fail(struct filter *f, int code, const char *fmt,
						       ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->why, sizeof(f->why), fmt, ap);
	va_end(ap);
	f->err = code;
}

/* Add one rule by name; a name this kernel's headers do not know is skipped. */
static int rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
		const struct scmp_arg_cmp *args)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0;
	return seccomp_rule_add_array(ctx, action, nr, n, args);
}

/* One rule with one argument comparison. */
#define RULE(ctx, act, name, cmp) rule(ctx, act, name, 1, (struct scmp_arg_cmp[]){cmp})

static int add_denylist(scmp_filter_ctx ctx, int thread_class)
{
	const uint32_t kill = SCMP_ACT_KILL_PROCESS;
	int r = 0;
	for (size_t i = 0; r == 0 && i < sizeof(denied) / sizeof(denied[0]); i++)
		r = rule(ctx, kill, denied[i], 0, NULL);
	/* Threads only: a clone without CLONE_THREAD is a new process. */
	if (r == 0)
		r = RULE(ctx, kill, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
	/* clone3's flags are behind a pointer the filter cannot read: glibc falls back to clone. */
	if (r == 0)
		r = rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL);
	/*
	 * A proxy enters the sandbox's network namespace, and so do the network
	 * module's short-lived helper threads that the supervisor's main thread
	 * starts; nothing enters any other kind.
	 */
	if (r == 0 && (thread_class == MSB_THREAD_PROXY || thread_class == MSB_SECCOMP_SUPERVISOR))
		r = RULE(ctx, kill, "setns", SCMP_A1(SCMP_CMP_NE, CLONE_NEWNET));
	else if (r == 0)
		r = rule(ctx, kill, "setns", 0, NULL);
	/* FIFOs and sockets, never device nodes. */
	for (unsigned t = 0; r == 0 && t < 2; t++) {
		scmp_datum_t type = t ? S_IFCHR : S_IFBLK;
		r = RULE(ctx, kill, "mknod", SCMP_A1(SCMP_CMP_MASKED_EQ, S_IFMT, type));
		if (r == 0)
			r = RULE(ctx, kill, "mknodat", SCMP_A2(SCMP_CMP_MASKED_EQ, S_IFMT, type));
	}
	/*
	 * Typing into a terminal this process may hold.  The kernel reads the
	 * command as 32 bits: the upper half of the register must not hide it.
	 */
	if (r == 0)
		r = RULE(ctx, kill, "ioctl", SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
	return r;
}

static int add_vcpu(scmp_filter_ctx ctx)
{
	int r = 0;
	for (size_t i = 0; r == 0 && i < sizeof(vcpu_allowed) / sizeof(vcpu_allowed[0]); i++)
		r = rule(ctx, SCMP_ACT_ALLOW, vcpu_allowed[i], 0, NULL);
	for (size_t i = 0; r == 0 && i < sizeof(vcpu_ioctls) / sizeof(vcpu_ioctls[0]); i++)
		r = RULE(ctx, SCMP_ACT_ALLOW, "ioctl",
			 SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)vcpu_ioctls[i]));
	/* Memory for malloc, never executable. */
	if (r == 0)
		r = RULE(ctx, SCMP_ACT_ALLOW, "mmap", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (r == 0)
		r = RULE(ctx, SCMP_ACT_ALLOW, "mprotect",
			 SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	return r;
}

static void build(int thread_class)
{
	struct filter *f = &filters[thread_class];
	bool vcpu = thread_class == MSB_THREAD_VCPU;
	scmp_filter_ctx ctx = seccomp_init(vcpu ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_ALLOW);
	if (!ctx) {
		fail(f, -ENOMEM, "seccomp_init failed");
		return;
	}
	/* Another ABI (i386's int 0x80, x32) kills the process too, not only the thread. */
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	/* A binary search on the call number rather than a list (libseccomp 2.5+; best effort). */
	(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (r == 0)
		r = vcpu ? add_vcpu(ctx) : add_denylist(ctx, thread_class);
	if (r < 0) {
		fail(f, r, "building the %s filter: %s", class_names[thread_class], strerror(-r));
		seccomp_release(ctx);
		return;
	}
	int fd = memfd_create("msb-seccomp", MFD_CLOEXEC);
	struct stat st;
	if (fd < 0 || (r = seccomp_export_bpf(ctx, fd)) < 0 || fstat(fd, &st) < 0 ||
	    st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) ||
	    st.st_size / sizeof(struct sock_filter) > BPF_MAXINSNS) {
		int e = r < 0 ? -r : errno ? errno : EIO;
		fail(f, -e, "exporting the %s filter: %s", class_names[thread_class], strerror(e));
	} else {
		struct sock_filter *insns = malloc((size_t)st.st_size);
		if (!insns || pread(fd, insns, (size_t)st.st_size, 0) != st.st_size) {
			fail(f, -EIO, "reading back the %s filter", class_names[thread_class]);
			free(insns);
		} else {
			f->prog.len = (unsigned short)(st.st_size / sizeof(struct sock_filter));
			f->prog.filter = insns;
		}
	}
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
}

int msb_seccomp_enter(int thread_class, char *why, size_t len)
{
	if (thread_class <= 0 || thread_class >= NCLASSES) {
		snprintf(why, len, "unknown thread class %d", thread_class);
		return -EINVAL;
	}
	struct filter *f = &filters[thread_class];
	pthread_mutex_lock(&build_lock);
	if (!f->built) {
		build(thread_class);
		f->built = true;
	}
	pthread_mutex_unlock(&build_lock);
	if (f->err) {
		snprintf(why, len, "%s", f->why);
		return f->err;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &f->prog) < 0) {
		int e = errno;
		snprintf(why, len, "loading the %s thread's seccomp filter: %s",
			 class_names[thread_class], strerror(e));
		return -e;
	}
	return 0;
}
