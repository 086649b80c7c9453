/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-error.h — the one error convention of msb, shared by the core, the SDK
 * and plugin modules.
 *
 * A function that can fail returns a negative errno value (-EINVAL, -ENOENT,
 * ...) and, when the caller passed one, fills a caller-owned struct msb_error
 * with that code and a one-line, human-readable message.  Callers add context
 * as the error travels up by prefixing the message.  Nothing is allocated:
 * the message lives in the struct, so an error can cross the plugin boundary
 * without either side freeing memory the other side allocated.
 *
 * See docs/error-handling.md.
 */
#ifndef MSB_ERROR_H
#define MSB_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* Longest message kept, including the terminating NUL; longer ones are cut. */
#define MSB_ERROR_MSG_MAX 512

struct msb_error {
	/* The negative errno the failing function returned; 0 when unset. */
	int code;
	/* One line, no trailing newline; "" when unset. */
	char msg[MSB_ERROR_MSG_MAX];
};

/* A zeroed error, ready to be passed down. */
#define MSB_ERROR_INIT                                                                             \
	{                                                                                          \
		0,                                                                                 \
		{                                                                                  \
			0                                                                          \
		}                                                                                  \
	}

#ifdef __cplusplus
}
#endif

#endif /* MSB_ERROR_H */
