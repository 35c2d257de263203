/*
 * omg_cbor_write.h - the one CBOR writer of the C side (RFC 8949, the
 * shortest head for every length, definite lengths only).
 *
 * Header-only so that the TA's core and the OP-TEE pseudo-TA (which build
 * in different worlds) share it. A writer fills a caller's buffer and
 * remembers if it ran out; check `over` once at the end.
 */
#ifndef OMG_CBOR_WRITE_H
#define OMG_CBOR_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct omg_cbw {
	uint8_t *p;
	size_t n, max;
	bool over;
};

static inline void omg_cbw_put(struct omg_cbw *w, const void *data, size_t len)
{
	if (w->over || len > w->max - w->n) {
		w->over = true;
		return;
	}
	if (len)
		memcpy(w->p + w->n, data, len);
	w->n += len;
}

static inline void omg_cbw_head(struct omg_cbw *w, uint8_t major, uint64_t v)
{
	uint8_t h[9];
	size_t len = 1;
	int bytes = 0;

	if (v < 24) {
		h[0] = (uint8_t)(major << 5 | v);
	} else {
		bytes = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffULL ? 4 : 8;
		h[0] = (uint8_t)(major << 5 | (bytes == 1 ? 24 : bytes == 2 ? 25 : bytes == 4 ? 26 : 27));
		for (int i = 0; i < bytes; i++)
			h[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
		len = 1 + (size_t)bytes;
	}
	omg_cbw_put(w, h, len);
}

static inline void omg_cbw_uint(struct omg_cbw *w, uint64_t v)
{
	omg_cbw_head(w, 0, v);
}

static inline void omg_cbw_int(struct omg_cbw *w, int64_t v)
{
	if (v >= 0)
		omg_cbw_head(w, 0, (uint64_t)v);
	else
		omg_cbw_head(w, 1, (uint64_t)(-(v + 1)));
}

static inline void omg_cbw_bytes(struct omg_cbw *w, const void *data, size_t len)
{
	omg_cbw_head(w, 2, len);
	omg_cbw_put(w, data, len);
}

static inline void omg_cbw_text(struct omg_cbw *w, const char *s, size_t len)
{
	omg_cbw_head(w, 3, len);
	omg_cbw_put(w, s, len);
}

static inline void omg_cbw_cstr(struct omg_cbw *w, const char *s)
{
	omg_cbw_text(w, s, strlen(s));
}

static inline void omg_cbw_array(struct omg_cbw *w, uint64_t n)
{
	omg_cbw_head(w, 4, n);
}

static inline void omg_cbw_map(struct omg_cbw *w, uint64_t n)
{
	omg_cbw_head(w, 5, n);
}

static inline void omg_cbw_tag(struct omg_cbw *w, uint64_t tag)
{
	omg_cbw_head(w, 6, tag);
}

static inline void omg_cbw_bool(struct omg_cbw *w, bool v)
{
	uint8_t b = v ? 0xf5 : 0xf4;

	omg_cbw_put(w, &b, 1);
}

static inline void omg_cbw_null(struct omg_cbw *w)
{
	uint8_t b = 0xf6;

	omg_cbw_put(w, &b, 1);
}

/* A single-precision float (major 7, 26): the scores' precision. */
static inline void omg_cbw_float(struct omg_cbw *w, float f)
{
	uint32_t u;
	uint8_t h[5];

	memcpy(&u, &f, sizeof(u));
	h[0] = 0xfa;
	for (int i = 0; i < 4; i++)
		h[1 + i] = (uint8_t)(u >> (24 - 8 * i));
	omg_cbw_put(w, h, sizeof(h));
}

#endif /* OMG_CBOR_WRITE_H */
