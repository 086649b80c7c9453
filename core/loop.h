/* SPDX-License-Identifier: Apache-2.0 */
/* The supervisor's event loop (epoll), shared with modules via host->fd_add. */
#ifndef MSB_CORE_LOOP_H
#define MSB_CORE_LOOP_H

#include <stdint.h>

#include <msb/msb-plugin.h>

struct msb_loop;

int msb_loop_new(struct msb_loop **out);
void msb_loop_free(struct msb_loop *loop);
int msb_loop_add(struct msb_loop *loop, int fd, uint32_t events, msb_fd_cb cb, void *arg);
int msb_loop_mod(struct msb_loop *loop, int fd, uint32_t events);
int msb_loop_del(struct msb_loop *loop, int fd);
/* Dispatch ready callbacks once, waiting at most timeout_ms (-1: forever). */
int msb_loop_run_once(struct msb_loop *loop, int timeout_ms);

#endif
