/* SPDX-License-Identifier: Apache-2.0 */
/* Built into msb-image-io.so only (see image-io.h). */
#include "image-io.h"

__attribute__((visibility("default"))) const char msb_image_io_version[] = MSB_VERSION_STRING;
