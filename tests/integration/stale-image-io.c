/* SPDX-License-Identifier: Apache-2.0 */
/* An image I/O module from another msb build (test_program_deps.sh). */
__attribute__((visibility("default"))) const char msb_image_io_version[] = "0.0.0-stale";
