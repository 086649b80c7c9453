/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-thread-class seccomp filters for module threads (docs/plugin-abi.md,
 * "Threads and seccomp").  host->thread_create puts every thread it starts under
 * its class's filter before the module's function runs; a thread that makes
 * a system call its filter refuses kills the whole process (SIGSYS), so a
 * sandbox whose monitor is subverted dies rather than reach further.
 */
#ifndef MSB_CORE_SECCOMP_H
#define MSB_CORE_SECCOMP_H

#include <stddef.h>

/*
 * Not a module thread class: the supervisor's main thread, which decodes the
 * guest agent's frames, from when the VM is up to the end (the denylist, as
 * a proxy thread: it starts the network module's helpers, which enter the
 * sandbox's network namespace).
 */
#define MSB_SECCOMP_SUPERVISOR 5

/*
 * Put the calling thread under the filter of thread_class (MSB_THREAD_*,
 * MSB_SECCOMP_SUPERVISOR),
 * with no_new_privs set.  0, or a negative errno with why filled in (one
 * line).  The filters are built once per process and cached.
 */
int msb_seccomp_enter(int thread_class, char *why, size_t len);

/* The class's name as the docs and messages use it ("vcpu", "vmm", ...). */
const char *msb_seccomp_class_name(int thread_class);

#endif
