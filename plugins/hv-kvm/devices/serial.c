/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Output-only 16550A: enough for Linux's 8250 driver and console.  The guest
 * writes bytes into THR; they go to the console log.  Reads of RBR find no
 * data.  A kernel panic is recognised on the console and reported as the
 * VM's exit reason, since panic=-1 turns it into a reset a moment later.
 */
#include "serial.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../vm.h"

enum {
	UART_RBR_THR = 0,
	UART_IER = 1,
	UART_IIR_FCR = 2,
	UART_LCR = 3,
	UART_MCR = 4,
	UART_LSR = 5,
	UART_MSR = 6,
	UART_SCR = 7,
};
#define LCR_DLAB	0x80
#define IER_THRI	0x02
#define IIR_NO_INT	0x01
#define IIR_THRI	0x02
#define IIR_FIFO	0xc0
#define LSR_THRE	0x20
#define LSR_TEMT	0x40
#define MSR_DCD_DSR_CTS 0xb0

#define LINE_MAX_LEN 256

struct serial {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t ier, lcr, mcr, scr, dll, dlm;
	bool thri_pending;
	int out_fd;
	char line[LINE_MAX_LEN];
	size_t line_len;
};

struct serial *serial_new(struct vm *vm)
{
	struct serial *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->vm = vm;
	s->out_fd = -1;
	s->dll = 12; /* 9600 baud until the driver says otherwise */
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

void serial_free(struct serial *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void serial_set_output(struct serial *s, int fd)
{
	s->out_fd = fd;
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (fd >= 0 && len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* a full disk must not stall the guest's console */
		p += n;
		len -= (size_t)n;
	}
}

/* Watch the console line by line for the kernel's last words. */
static void scan_line(struct serial *s)
{
	s->line[s->line_len] = '\0';
	const char *p = strstr(s->line, "Kernel panic - not syncing");
	if (p)
		vm_request_exit(s->vm, VM_EXIT_PANIC, p);
	/*
	 * Without ACPI a guest cannot switch the machine off: its poweroff and
	 * halt end in a CPU loop after these lines (kernel/reboot.c).  The
	 * guest could print them at will, but it may end itself anyway.
	 */
	else if (strstr(s->line, "reboot: Power down"))
		vm_request_exit(s->vm, VM_EXIT_REBOOT, "the guest powered off");
	else if (strstr(s->line, "reboot: System halted"))
		vm_request_exit(s->vm, VM_EXIT_REBOOT, "the guest halted");
	s->line_len = 0;
}

static void put_char(struct serial *s, uint8_t c)
{
	write_all(s->out_fd, &c, 1);
	if (c == '\n') {
		scan_line(s);
	} else if (s->line_len < LINE_MAX_LEN - 1) {
		s->line[s->line_len++] = (char)c;
	}
}

void serial_pio(struct serial *s, uint16_t port, uint8_t *data, unsigned size, bool is_write)
{
	if (size != 1) {
		if (!is_write)
			memset(data, 0xff, size);
		return;
	}
	unsigned reg = port - SERIAL_PORT;
	bool raise = false;
	pthread_mutex_lock(&s->lock);
	bool dlab = s->lcr & LCR_DLAB;
	if (is_write) {
		uint8_t v = data[0];
		switch (reg) {
		case UART_RBR_THR:
			if (dlab) {
				s->dll = v;
			} else {
				put_char(s, v);
				/* Transmission is instant: THR is empty again at once. */
				if (s->ier & IER_THRI) {
					s->thri_pending = true;
					raise = true;
				}
			}
			break;
		case UART_IER:
			if (dlab) {
				s->dlm = v;
			} else {
				bool was = s->ier & IER_THRI;
				s->ier = v & 0x0f;
				if (!was && (s->ier & IER_THRI)) {
					s->thri_pending = true;
					raise = true;
				}
			}
			break;
		case UART_LCR:
			s->lcr = v;
			break;
		case UART_MCR:
			s->mcr = v;
			break;
		case UART_SCR:
			s->scr = v;
			break;
		default: /* FCR and read-only registers */
			break;
		}
	} else {
		uint8_t v = 0;
		switch (reg) {
		case UART_RBR_THR:
			v = dlab ? s->dll : 0;
			break;
		case UART_IER:
			v = dlab ? s->dlm : s->ier;
			break;
		case UART_IIR_FCR:
			v = IIR_FIFO | (s->thri_pending ? IIR_THRI : IIR_NO_INT);
			s->thri_pending = false; /* reading IIR acknowledges THRI */
			break;
		case UART_LCR:
			v = s->lcr;
			break;
		case UART_MCR:
			v = s->mcr;
			break;
		case UART_LSR:
			v = LSR_THRE | LSR_TEMT;
			break;
		case UART_MSR:
			v = MSR_DCD_DSR_CTS;
			break;
		case UART_SCR:
			v = s->scr;
			break;
		default:
			break;
		}
		data[0] = v;
	}
	pthread_mutex_unlock(&s->lock);
	if (raise)
		vm_irq_pulse(s->vm, SERIAL_IRQ);
}
