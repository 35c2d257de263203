/*
 * cbor.h - a bounded CBOR (RFC 8949) decoder: the subset our formats use.
 *
 * Two steps. omg_cbor_check() reads a whole buffer once and refuses it
 * unless it is exactly one well-formed item within the core's limits:
 *
 *   - definite lengths only (indefinite-length items are refused);
 *   - every length and count checked against the bytes left before use;
 *   - at most OMG_MAX_CBOR_ITEMS items (every head counts, keys included)
 *     and at most OMG_MAX_CBOR_DEPTH nested containers (arrays, maps, tags);
 *   - text strictly UTF-8 (as Python's decoder: no overlongs, surrogates or
 *     code points above U+10FFFF);
 *   - map keys are integers or text, each at most once in its map, and at
 *     most OMG_CBOR_MAX_PAIRS pairs in a map (our maps have a dozen keys;
 *     the bound keeps the duplicate check, quadratic, to a few milliseconds);
 *   - no tag, except tag 18 (COSE_Sign1) around the top item if allowed;
 *   - simple values: false, true, null, undefined and simple(n) as RFC 8949
 *     allows them; floats: half, single, double;
 *   - no bytes after the top item;
 *   - with OMG_CBOR_CANONICAL also: the shortest head for every integer,
 *     length, count and tag, and map keys in the canonical order of RFC 7049
 *     (shorter encoded key first, then bytewise), as cbor2's canonical=True
 *     writes them. Float widths are not checked.
 *
 * Then the parsers walk the checked buffer with omg_cbor_head() and
 * omg_cbor_skip(), which bound-check every read again on their own and never
 * recurse: the format code decides the nesting, not the data.
 */
#ifndef OMG_CBOR_H
#define OMG_CBOR_H

#include "omg_core.h"

enum omg_cbor_type {
	OMG_CBOR_UINT = 0,	/* arg: the value */
	OMG_CBOR_NINT = 1,	/* arg: the value is -1 - arg */
	OMG_CBOR_BSTR = 2,	/* str: the bytes (arg: their length) */
	OMG_CBOR_TSTR = 3,	/* str: the UTF-8 bytes (arg: their length) */
	OMG_CBOR_ARRAY = 4,	/* arg: number of items that follow */
	OMG_CBOR_MAP = 5,	/* arg: number of key/value pairs that follow */
	OMG_CBOR_TAG = 6,	/* arg: the tag number; one item follows */
	OMG_CBOR_SIMPLE = 7,	/* arg: an unassigned simple value */
	OMG_CBOR_FALSE = 8,
	OMG_CBOR_TRUE = 9,
	OMG_CBOR_NULL = 10,
	OMG_CBOR_UNDEFINED = 11,
	OMG_CBOR_FLOAT = 12,	/* f: the value (half and single widened exactly) */
};

/* One head as read, with its string content if it is a string. */
typedef struct {
	uint32_t type;		/* enum omg_cbor_type */
	uint64_t arg;
	double f;
	omg_bytes str;
	size_t start;		/* offset of the head in the buffer */
	size_t head_len;	/* bytes of the head (1, 2, 3, 5 or 9) */
	bool shortest;		/* head has the shortest encoding of arg */
} omg_cbor_item;

typedef struct {
	const uint8_t *buf;
	size_t len;
	size_t pos;
} omg_cbor_reader;

#define OMG_CBOR_MAX_PAIRS 64

#define OMG_CBOR_CANONICAL 0x1u	/* shortest heads, canonical key order */
#define OMG_CBOR_TAG18 0x2u	/* tag 18 may wrap the top item */

/* True if buf[0..len) is exactly one item as described above. */
bool omg_cbor_check(const uint8_t *buf, size_t len, uint32_t flags);

/* Reads one head at r->pos (and a string's content) and moves past it.
 * False, r unchanged, if the head is not well-formed or runs past the end. */
bool omg_cbor_head(omg_cbor_reader *r, omg_cbor_item *it);

/* Moves past one whole item (a container with everything in it). */
bool omg_cbor_skip(omg_cbor_reader *r);

/* Typed views of an item read by omg_cbor_head. */
bool omg_cbor_get_int64(const omg_cbor_item *it, int64_t *v);
bool omg_cbor_text_is(const omg_cbor_item *it, const char *s);
bool omg_cbor_text_in(const omg_cbor_item *it, const char *const *names, uint32_t n,
		      uint32_t *index);

#endif /* OMG_CBOR_H */
