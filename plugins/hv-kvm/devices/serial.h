/* SPDX-License-Identifier: Apache-2.0 */
/* A 16550A UART at COM1 (0x3f8, IRQ 4): the guest's console, written to a log. */
#ifndef MSB_HV_SERIAL_H
#define MSB_HV_SERIAL_H

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct serial;

#define SERIAL_PORT 0x3f8
#define SERIAL_IRQ  4

struct serial *serial_new(struct vm *vm);
void serial_free(struct serial *s);
static inline bool serial_handles(uint16_t port)
{
	return port >= SERIAL_PORT && port < SERIAL_PORT + 8;
}
void serial_pio(struct serial *s, uint16_t port, uint8_t *data, unsigned size, bool is_write);
/* The console log: every byte the guest writes goes there (fd owned by the caller). */
void serial_set_output(struct serial *s, int fd);

#endif
