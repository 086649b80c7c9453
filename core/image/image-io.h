/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image I/O module: msb-image-io.so, the part of the image code that
 * talks to registries (pull.c: libcurl, OpenSSL's TLS) and reads or writes
 * archives (layer.c, image-archive.c: libarchive).  Those libraries are some
 * 35 shared objects (libcurl's and libarchive's own dependencies: GnuTLS via
 * librtmp, Kerberos and LDAP, libxml2 and ICU, ...).  Linked into msb they
 * cost every command their loading and relocation, about 0.3 s in the KVM
 * test host, although `msb run`, `exec`, `ls`, `stop` and a sandbox from an
 * image that is already unpacked never use them.  So msb loads the module
 * on the first call that needs it (cli/image-io.c), from next to the msb
 * program (the build tree) or from the libexec directory.
 *
 * The module resolves everything else (the store, manifests, references,
 * errors) from the msb program, which exports its symbols; it is private to
 * one build of msb, checked by version string, never a plugin.
 */
#ifndef MSB_IMAGE_IO_H
#define MSB_IMAGE_IO_H

#define MSB_IMAGE_IO_MODULE "msb-image-io.so"

/* Defined by the module: the msb version it was built with. */
extern const char msb_image_io_version[];

#endif
