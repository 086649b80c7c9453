/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references: "python", "ghcr.io/owner/repo:tag", "host:5000/a/b@sha256:..."
 * parsed and normalised with Docker's rules (distribution/reference), so a name
 * means here what it means to `docker pull`.
 *
 * Accepted grammar (the input is at most MSB_IMAGE_REF_MAX bytes):
 *
 *   reference  := name [ ":" tag ] [ "@" digest ]
 *   name       := [ registry "/" ] path              (at most 255 bytes, normalised)
 *   registry   := host [ ":" port ]                  (port 1-65535, no leading zero)
 *   host       := label ( "." label )* | "[" [0-9A-Fa-f:]+ "]"
 *   label      := [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
 *   path       := component ( "/" component )*
 *   component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *   tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *   digest     := "sha256:" [a-f0-9]{64}
 *
 * The first "/"-separated component is the registry iff it contains "." or
 * ":" or is "localhost"; otherwise the registry is Docker Hub ("docker.io")
 * and a one-component path gets "library/".  Unlike the newest
 * distribution/reference, a first component with uppercase letters is not
 * taken for a registry ("Foo/bar" is an error, not host "Foo"): it is far
 * more likely a mistyped repository than a dot-less host name.
 */
#ifndef MSB_IMAGE_REF_H
#define MSB_IMAGE_REF_H

#include <stddef.h>

#include <msb/msb-error.h>

/* Longest reference text accepted, in bytes. */
#define MSB_IMAGE_REF_MAX 4096
/* Longest name (registry "/" repository), as Docker's NameTotalLengthMax. */
#define MSB_IMAGE_NAME_MAX 255

struct msb_image_ref {
	char *registry;	  /* normalised (lowercase) host[:port]; "docker.io" for Docker Hub */
	char *repository; /* "library/python" for the short name "python" */
	char *tag; /* "latest" when neither tag nor digest was given; NULL when only a digest was */
	char *digest; /* "sha256:<64 lowercase hex>" or NULL */
};

/*
 * Parse s into *ref (all fields malloc'd).  Returns 0, or -EINVAL (a
 * malformed reference), -E2BIG (too long) or -ENOMEM with err set to one
 * line naming the reference and what was expected; *ref is then all NULL.
 */
int msb_image_ref_parse(const char *s, struct msb_image_ref *ref, struct msb_error *err);

/* Free the fields of *ref and set them to NULL; ref itself is the caller's. */
void msb_image_ref_free(struct msb_image_ref *ref);

/*
 * Canonical form: "docker.io/library/python:latest", "host:5000/a/b@sha256:...",
 * "r/x:t@sha256:..." (malloc'd; NULL on allocation failure or if ref has
 * no registry or repository).  It parses back to the same reference.
 */
char *msb_image_ref_format(const struct msb_image_ref *ref);

/*
 * Where the registry's API lives: "registry-1.docker.io" for docker.io,
 * else the registry itself.  Points into ref or at a static string.
 */
const char *msb_image_ref_api_host(const struct msb_image_ref *ref);

/* True if s is a digest this module accepts: "sha256:" and 64 lowercase hex digits. */
int msb_digest_valid(const char *s);
/* "sha256:<64 hex>" of a 32-byte SHA-256 value. */
void msb_digest_format(const unsigned char md[32], char out[72]);
/* "sha256:<64 hex>" of buf (OpenSSL); "" if hashing failed. */
void msb_digest_of(const void *buf, size_t len, char out[72]);

#endif /* MSB_IMAGE_REF_H */
