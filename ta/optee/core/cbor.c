/*
 * cbor.c - the bounded CBOR decoder (cbor.h says what it accepts).
 *
 * No recursion: omg_cbor_check keeps one small counter per open container
 * (at most OMG_MAX_CBOR_DEPTH of them) and omg_cbor_skip one counter of items
 * still to pass. Every length is compared with the bytes left before it is
 * used, in uint64_t, so nothing wraps on a 32-bit TA either.
 */
#include <string.h>

#include "cbor.h"

enum { LEVEL_ARRAY, LEVEL_MAP, LEVEL_TAG };

struct level {
	uint32_t left;		/* items still to come in this container */
	uint8_t kind;		/* LEVEL_* */
	bool has_key;		/* a previous key of this map (canonical order) */
	size_t key_off;
	size_t key_len;
};

static uint64_t read_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* 2^e as a double, for e in the normal range (no libm: built from bits) */
static double pow2(int e)
{
	uint64_t bits = (uint64_t)(e + 1023) << 52;
	double d;

	memcpy(&d, &bits, sizeof(d));
	return d;
}

static double half_to_double(uint16_t h)
{
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t mant = h & 0x3ff;
	uint64_t bits;
	double d;

	if (exp == 0) {
		d = (double)mant * pow2(-24);		/* zero or subnormal: exact */
	} else if (exp == 31) {
		bits = 0x7ff0000000000000ull | ((uint64_t)mant << 42);
		memcpy(&d, &bits, sizeof(d));		/* infinity or NaN */
	} else {
		d = (double)(mant | 0x400) * pow2((int)exp - 25);
	}
	return (h & 0x8000) ? -d : d;
}

static double single_to_double(uint32_t v)
{
	float f;

	memcpy(&f, &v, sizeof(f));
	return (double)f;
}

static double double_of(uint64_t v)
{
	double d;

	memcpy(&d, &v, sizeof(d));
	return d;
}

/* Major type 7: simple values (ai < 24, or 24 and a byte) and floats. */
static void read_simple(omg_cbor_item *it, uint8_t ai, uint64_t arg)
{
	switch (ai) {
	case 20:
		it->type = OMG_CBOR_FALSE;
		break;
	case 21:
		it->type = OMG_CBOR_TRUE;
		break;
	case 22:
		it->type = OMG_CBOR_NULL;
		break;
	case 23:
		it->type = OMG_CBOR_UNDEFINED;
		break;
	case 25:
		it->type = OMG_CBOR_FLOAT;
		it->f = half_to_double((uint16_t)arg);
		break;
	case 26:
		it->type = OMG_CBOR_FLOAT;
		it->f = single_to_double((uint32_t)arg);
		break;
	case 27:
		it->type = OMG_CBOR_FLOAT;
		it->f = double_of(arg);
		break;
	default:
		it->type = OMG_CBOR_SIMPLE;
		break;
	}
	it->shortest = true;	/* float widths are not judged */
}

/* What follows a head: a string's bytes, or room for a container's items. */
static bool body_ok(omg_cbor_item *h, uint8_t major, uint8_t ai, size_t *left)
{
	switch (major) {
	case 2:
	case 3:
		if (h->arg > (uint64_t)*left)
			return false;
		h->str.len = (size_t)h->arg;
		*left -= h->str.len;
		return true;
	case 4:
		return h->arg <= (uint64_t)*left;	/* every item takes a byte */
	case 5:
		return h->arg <= (uint64_t)(*left / 2);
	case 6:
		return *left > 0;
	case 7:
		if (ai == 24 && h->arg < 32)
			return false;	/* simple values below 32 take one byte */
		read_simple(h, ai, h->arg);
		return true;
	default:
		return true;
	}
}

bool omg_cbor_head(omg_cbor_reader *r, omg_cbor_item *it)
{
	omg_cbor_item h;
	size_t left, n = 0;
	uint8_t major, ai;
	bool ok = false;

	if (!r || !it || !r->buf || r->pos >= r->len)
		goto out;
	memset(&h, 0, sizeof(h));
	h.start = r->pos;
	left = r->len - r->pos - 1;	/* after the initial byte */
	major = r->buf[r->pos] >> 5;
	ai = r->buf[r->pos] & 0x1f;
	if (ai > 27)
		goto out;	/* 28-30 reserved; 31 indefinite length or break */
	if (ai >= 24) {
		n = (size_t)1 << (ai - 24);
		if (n > left)
			goto out;
		h.arg = read_be(r->buf + r->pos + 1, n);
	} else {
		h.arg = ai;
	}
	left -= n;
	h.head_len = 1 + n;
	h.shortest = ai < 24 || (ai == 24 && h.arg >= 24) || (ai == 25 && h.arg > 0xff) ||
		     (ai == 26 && h.arg > 0xffff) || (ai == 27 && h.arg > 0xffffffffull);
	h.type = major;
	h.str.ptr = r->buf + r->pos + h.head_len;
	if (!body_ok(&h, major, ai, &left))
		goto out;
	if (h.type != OMG_CBOR_BSTR && h.type != OMG_CBOR_TSTR)
		h.str.ptr = NULL;
	r->pos = r->len - left;
	*it = h;
	ok = true;
out:
	return ok;
}

/* Items a head says follow it (arrays, maps, tags), at most 2 * bytes left. */
static uint64_t children(const omg_cbor_item *it)
{
	if (it->type == OMG_CBOR_ARRAY)
		return it->arg;
	if (it->type == OMG_CBOR_MAP)
		return 2 * it->arg;
	return it->type == OMG_CBOR_TAG ? 1 : 0;
}

bool omg_cbor_skip(omg_cbor_reader *r)
{
	omg_cbor_reader c;
	omg_cbor_item it;
	uint64_t todo = 1;	/* each head is checked against the bytes left: no wrap */
	bool ok = r != NULL;

	if (ok)
		c = *r;
	while (ok && todo) {
		ok = omg_cbor_head(&c, &it);
		if (ok)
			todo = todo - 1 + children(&it);
	}
	if (ok)
		*r = c;
	return ok;
}

/* Strict UTF-8 (RFC 3629), what Python's decoder accepts. */
static bool utf8_ok(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		uint8_t lo = 0x80, hi = 0xbf;
		size_t more;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			more = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			more = 2;
			if (c == 0xe0)
				lo = 0xa0;	/* overlong */
			else if (c == 0xed)
				hi = 0x9f;	/* surrogates */
		} else if (c >= 0xf0 && c <= 0xf4) {
			more = 3;
			if (c == 0xf0)
				lo = 0x90;	/* overlong */
			else if (c == 0xf4)
				hi = 0x8f;	/* above U+10FFFF */
		} else {
			return false;
		}
		if (more > n - i - 1)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= more; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
		i += more + 1;
	}
	return true;
}

static bool is_key_type(const omg_cbor_item *it)
{
	return it->type == OMG_CBOR_UINT || it->type == OMG_CBOR_NINT ||
	       it->type == OMG_CBOR_TSTR;
}

static size_t encoded_len(const omg_cbor_item *it)
{
	return it->head_len + (it->type == OMG_CBOR_TSTR ? it->str.len : 0);
}

/* RFC 7049 canonical order: shorter encoding first, then bytewise. */
static bool key_after(const uint8_t *buf, const struct level *l, const omg_cbor_item *k)
{
	size_t len = encoded_len(k);

	if (len != l->key_len)
		return len > l->key_len;
	return memcmp(buf + k->start, buf + l->key_off, len) > 0;
}

static bool keys_equal(const omg_cbor_item *a, const omg_cbor_item *b)
{
	if (a->type != b->type || a->arg != b->arg)
		return false;
	return a->type != OMG_CBOR_TSTR || !memcmp(a->str.ptr, b->str.ptr, a->str.len);
}

/* No key twice among the n pairs at pos (keys are integers or text). */
static bool map_keys_unique(const uint8_t *buf, size_t len, size_t pos, uint64_t n)
{
	omg_cbor_reader a = { buf, len, pos };
	omg_cbor_reader b;
	omg_cbor_item ka, kb;

	for (uint64_t i = 0; i < n; i++) {
		if (!omg_cbor_head(&a, &ka) || !is_key_type(&ka))
			return false;
		b = a;
		if (!omg_cbor_skip(&b))
			return false;
		for (uint64_t j = i + 1; j < n; j++) {
			if (!omg_cbor_head(&b, &kb) || keys_equal(&ka, &kb) ||
			    !omg_cbor_skip(&b))
				return false;
		}
		if (!omg_cbor_skip(&a))
			return false;
	}
	return true;
}

/* Every map of a checked buffer, one after the other (heads in order). */
static bool all_keys_unique(const uint8_t *buf, size_t len)
{
	omg_cbor_reader r = { buf, len, 0 };
	omg_cbor_item it;

	while (r.pos < len) {
		if (!omg_cbor_head(&r, &it))
			return false;
		if (it.type == OMG_CBOR_MAP && it.arg > 1 &&
		    !map_keys_unique(buf, len, r.pos, it.arg))
			return false;
	}
	return true;
}

struct walk {
	omg_cbor_reader r;
	struct level st[OMG_MAX_CBOR_DEPTH];
	uint32_t depth;		/* open containers */
	uint32_t items;
	uint32_t flags;
};

/* One item as omg_cbor_check meets it: its encoding, its kind, its place. */
static bool item_ok(struct walk *w, const omg_cbor_item *it)
{
	struct level *up = w->depth ? &w->st[w->depth - 1] : NULL;
	const uint8_t *buf = w->r.buf;

	if ((w->flags & OMG_CBOR_CANONICAL) && !it->shortest)
		return false;
	if (it->type == OMG_CBOR_TSTR && !utf8_ok(it->str.ptr, it->str.len))
		return false;
	if (it->type == OMG_CBOR_TAG &&
	    !((w->flags & OMG_CBOR_TAG18) && w->items == 1 && it->arg == 18))
		return false;
	if (up && up->kind == LEVEL_MAP && up->left % 2 == 0) {	/* a key */
		if (!is_key_type(it))
			return false;
		if (w->flags & OMG_CBOR_CANONICAL) {
			if (up->has_key && !key_after(buf, up, it))
				return false;
			up->has_key = true;
			up->key_off = it->start;
			up->key_len = encoded_len(it);
		}
	}
	return true;
}

/* A container opens a level, even an empty one (it counts for the depth). */
static bool open_level(struct walk *w, const omg_cbor_item *it)
{
	uint64_t n = children(it);
	struct level *l;

	if (w->depth >= OMG_MAX_CBOR_DEPTH)
		return false;
	if (it->type == OMG_CBOR_MAP && it->arg > OMG_CBOR_MAX_PAIRS)
		return false;
	if (n > OMG_MAX_CBOR_ITEMS - w->items)
		return false;
	if (n) {
		l = &w->st[w->depth++];
		l->left = (uint32_t)n;
		l->kind = it->type == OMG_CBOR_ARRAY ? LEVEL_ARRAY :
			  it->type == OMG_CBOR_MAP ? LEVEL_MAP : LEVEL_TAG;
		l->has_key = false;
	}
	return true;
}

static bool walk_item(struct walk *w)
{
	omg_cbor_item it;

	if (!omg_cbor_head(&w->r, &it) || ++w->items > OMG_MAX_CBOR_ITEMS)
		return false;
	if (!item_ok(w, &it))
		return false;
	if (w->depth)
		w->st[w->depth - 1].left--;
	if ((it.type == OMG_CBOR_ARRAY || it.type == OMG_CBOR_MAP || it.type == OMG_CBOR_TAG) &&
	    !open_level(w, &it))
		return false;
	while (w->depth && !w->st[w->depth - 1].left)
		w->depth--;
	return true;
}

bool omg_cbor_check(const uint8_t *buf, size_t len, uint32_t flags)
{
	struct walk w;
	bool ok = false;

	if (!buf || !len || len > OMG_MAX_MESSAGE)
		goto out;
	memset(&w, 0, sizeof(w));
	w.r.buf = buf;
	w.r.len = len;
	w.flags = flags;
	do {
		if (!walk_item(&w))
			goto out;
	} while (w.depth);
	if (w.r.pos != len)
		goto out;	/* bytes after the top item */
	/* canonical order is strictly increasing: no key can repeat */
	ok = (flags & OMG_CBOR_CANONICAL) || all_keys_unique(buf, len);
out:
	return ok;
}

bool omg_cbor_get_int64(const omg_cbor_item *it, int64_t *v)
{
	bool ok = (it->type == OMG_CBOR_UINT || it->type == OMG_CBOR_NINT) &&
		  it->arg <= (uint64_t)INT64_MAX;

	if (ok)
		*v = it->type == OMG_CBOR_UINT ? (int64_t)it->arg : -1 - (int64_t)it->arg;
	return ok;
}

/* (compared a byte at a time: a length loop would become a call to strlen) */
bool omg_cbor_text_is(const omg_cbor_item *it, const char *s)
{
	bool ok = it->type == OMG_CBOR_TSTR;
	size_t i;

	for (i = 0; ok && i < it->str.len; i++)
		ok = s[i] && it->str.ptr[i] == (uint8_t)s[i];
	return ok && !s[i];
}

bool omg_cbor_text_in(const omg_cbor_item *it, const char *const *names, uint32_t n,
		      uint32_t *index)
{
	bool found = false;

	for (uint32_t i = 0; i < n && !found; i++) {
		found = omg_cbor_text_is(it, names[i]);
		if (found)
			*index = i;
	}
	return found;
}
