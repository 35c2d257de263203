/*
 * package.c - the sealed model package's header (docs/formats.md), as
 * ta/omg_ta/package.py parse_header checks it, and the frontend settings it
 * carries in input.frontend, as omg_ta.frontend.FrontendSettings.from_dict
 * and its __post_init__ check them.
 *
 *   magic (8) | hlen (4, BE) | header (hlen, canonical CBOR map) | slen (2) = 64
 *   | signature (64) | segments
 *
 * Anything malformed is OMG_RESULT_PACKAGE_INTEGRITY; nothing is decrypted
 * or verified here. Stricter than Python (refusals only): booleans are not
 * integers, model_version is unsigned, at most OMG_MAX_LABELS labels of
 * OMG_MAX_LABEL_LEN bytes, model_id and runtime at most OMG_MAX_ID_LEN bytes,
 * integer settings fit an int32_t, float settings are finite floats or
 * integers of at most FE_MAX_INT in magnitude, and the rules of cbor.h hold
 * (canonical encoding, no duplicate keys, no tags, no trailing bytes).
 */
#include <string.h>

#include "cbor.h"

#define PKG_MAGIC_LEN 8
#define PKG_SIG_LEN 64
#define PKG_FORMAT_VERSION 1
#define PKG_SHA256_LEN 32
#define PKG_NONCE_PREFIX_LEN 7

/* Integers given for a float setting: exact in a double, and so is their
 * product with an int32 sample rate (< 2^53), so window and hop sizes come
 * out as Python computes them from integers. */
#define FE_MAX_INT (1 << 22)

static const uint8_t pkg_magic[PKG_MAGIC_LEN] = { 'O', 'M', 'G', 'P', 'K', 'G', 0, 1 };

/* ------------------------------------------------------------------------
 * Frontend settings
 * ---------------------------------------------------------------------- */

enum {
	FE_KIND, FE_SAMPLE_RATE, FE_CLIP_MS, FE_WINDOW_MS, FE_HOP_MS, FE_NUM_MEL_BINS,
	FE_NUM_COEFFICIENTS, FE_LOWER_HZ, FE_UPPER_HZ, FE_LOG_OFFSET, FE_LOG_FLOOR, FE_COUNT
};

static const char *const fe_names[FE_COUNT] = {
	"kind", "sample_rate", "clip_ms", "window_ms", "hop_ms", "num_mel_bins",
	"num_coefficients", "lower_hz", "upper_hz", "log_offset", "log_floor",
};

/* What a header without a key means: frontend.py's FrontendSettings.from_dict, whose
 * WHEN_ABSENT keeps log_offset 1e-2 and log_floor 0 (the values before the log clamp),
 * not today's FrontendSettings() defaults; packages written by omgkit name every key. */
static void fe_when_absent(omg_fe_settings *s)
{
	s->kind = OMG_FE_MFCC;
	s->sample_rate = OMG_SAMPLE_RATE;
	s->clip_ms = 1000;
	s->window_ms = 40.0;
	s->hop_ms = 20.0;
	s->num_mel_bins = 40;
	s->num_coefficients = 10;
	s->lower_hz = 20.0;
	s->upper_hz = 4000.0;
	s->log_offset = 1e-2;
	s->log_floor = 0.0;
}

static bool is_finite(double x)
{
	uint64_t bits;

	memcpy(&bits, &x, sizeof(bits));
	return ((bits >> 52) & 0x7ff) != 0x7ff;
}

/* Python's round(): to nearest, ties to even (the FPU's default mode). */
static double round_even(double x)
{
	const double two52 = 4503599627370496.0;	/* from here on all integers */

	if (x >= two52 || x <= -two52)
		return x;
	if (x >= 0)
		return (x + two52) - two52;
	return (x - two52) + two52;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	if (a % b && (a < 0) != (b < 0))
		q--;
	return q;
}

static bool fe_int(const omg_cbor_item *v, int32_t *out)
{
	int64_t x;

	if (!omg_cbor_get_int64(v, &x) || x < INT32_MIN || x > INT32_MAX)
		return false;
	*out = (int32_t)x;
	return true;
}

static bool fe_float(const omg_cbor_item *v, double *out)
{
	int64_t x;

	if (v->type == OMG_CBOR_FLOAT) {
		*out = v->f;
		return is_finite(v->f);
	}
	if (!omg_cbor_get_int64(v, &x) || x < -FE_MAX_INT || x > FE_MAX_INT)
		return false;
	*out = (double)x;
	return true;
}

static bool fe_value(uint32_t key, const omg_cbor_item *v, omg_fe_settings *s)
{
	switch (key) {
	case FE_KIND:
		if (omg_cbor_text_is(v, "mfcc"))
			s->kind = OMG_FE_MFCC;
		else if (omg_cbor_text_is(v, "logmel"))
			s->kind = OMG_FE_LOGMEL;
		else
			return false;
		return true;
	case FE_SAMPLE_RATE:
		return fe_int(v, &s->sample_rate);
	case FE_CLIP_MS:
		return fe_int(v, &s->clip_ms);
	case FE_WINDOW_MS:
		return fe_float(v, &s->window_ms);
	case FE_HOP_MS:
		return fe_float(v, &s->hop_ms);
	case FE_NUM_MEL_BINS:
		return fe_int(v, &s->num_mel_bins);
	case FE_NUM_COEFFICIENTS:
		return fe_int(v, &s->num_coefficients);
	case FE_LOWER_HZ:
		return fe_float(v, &s->lower_hz);
	case FE_UPPER_HZ:
		return fe_float(v, &s->upper_hz);
	case FE_LOG_OFFSET:
		return fe_float(v, &s->log_offset);
	case FE_LOG_FLOOR:
		return fe_float(v, &s->log_floor);
	default:
		return false;
	}
}

/* window_samples, hop_samples: int(round(sample_rate * ms / 1000)) */
static bool fe_samples(int32_t rate, double ms, double *n)
{
	double x = (double)rate * ms / 1000.0;

	if (!is_finite(x))
		return false;	/* Python: round() of inf or nan raises */
	*n = round_even(x);
	return true;
}

/* FrontendSettings.__post_init__ */
static bool fe_consistent(const omg_fe_settings *s)
{
	double clip, window, hop;

	if (!(0 < s->lower_hz && s->lower_hz < s->upper_hz &&
	      s->upper_hz <= (double)s->sample_rate / 2))
		return false;
	/* |rate * clip_ms| < 2^62, so clip_samples is exact in a double */
	clip = (double)floor_div((int64_t)s->sample_rate * s->clip_ms, 1000);
	if (!fe_samples(s->sample_rate, s->window_ms, &window) || window > clip)
		return false;
	if (!fe_samples(s->sample_rate, s->hop_ms, &hop) || hop <= 0)
		return false;
	if (s->kind == OMG_FE_MFCC &&
	    !(0 < s->num_coefficients && s->num_coefficients <= s->num_mel_bins))
		return false;
	if (!(s->log_offset > 0 || s->log_floor > 0))
		return false;	/* the log of digital silence */
	return true;
}

/* input.frontend: known keys only, the rest take the defaults. */
static bool read_frontend(omg_cbor_reader *r, omg_fe_settings *s)
{
	omg_cbor_item m, k, v;
	uint32_t key;

	if (!omg_cbor_head(r, &m) || m.type != OMG_CBOR_MAP)
		return false;
	for (uint64_t i = 0; i < m.arg; i++) {
		if (!omg_cbor_head(r, &k) || !omg_cbor_text_in(&k, fe_names, FE_COUNT, &key))
			return false;	/* FrontendSettings.from_dict: unknown setting */
		if (!omg_cbor_head(r, &v) || !fe_value(key, &v, s))
			return false;
	}
	return true;
}

/* input: a map; its frontend, if any, is read, other keys are passed over. */
static bool read_input(omg_cbor_reader *r, omg_fe_settings *s)
{
	omg_cbor_item m, k;
	bool ok;

	if (!omg_cbor_head(r, &m) || m.type != OMG_CBOR_MAP)
		return false;
	for (uint64_t i = 0; i < m.arg; i++) {
		if (!omg_cbor_head(r, &k))
			return false;
		if (omg_cbor_text_is(&k, "frontend"))
			ok = read_frontend(r, s);
		else
			ok = omg_cbor_skip(r);
		if (!ok)
			return false;
	}
	return fe_consistent(s);	/* with the defaults for what is not given */
}

/* ------------------------------------------------------------------------
 * The header map
 * ---------------------------------------------------------------------- */

enum {
	H_V, H_MODEL_ID, H_MODEL_VERSION, H_RUNTIME, H_INPUT, H_LABELS, H_PT_SHA256,
	H_PT_LEN, H_SEG_SIZE, H_NONCE_PREFIX, H_COUNT
};

static const char *const h_names[H_COUNT] = {
	"v", "model_id", "model_version", "runtime", "input", "labels", "pt_sha256",
	"pt_len", "seg_size", "nonce_prefix",
};

static bool read_text(omg_cbor_reader *r, size_t max, omg_bytes *out)
{
	omg_cbor_item it;

	if (!omg_cbor_head(r, &it) || it.type != OMG_CBOR_TSTR || it.str.len > max)
		return false;
	*out = it.str;
	return true;
}

static bool read_uint(omg_cbor_reader *r, uint64_t *out)
{
	omg_cbor_item it;

	if (!omg_cbor_head(r, &it) || it.type != OMG_CBOR_UINT)
		return false;
	*out = it.arg;
	return true;
}

static bool read_fixed(omg_cbor_reader *r, uint8_t *out, size_t len)
{
	omg_cbor_item it;

	if (!omg_cbor_head(r, &it) || it.type != OMG_CBOR_BSTR || it.str.len != len)
		return false;
	memcpy(out, it.str.ptr, len);
	return true;
}

static bool read_labels(omg_cbor_reader *r, omg_pkg_header *h)
{
	omg_cbor_item a;

	if (!omg_cbor_head(r, &a) || a.type != OMG_CBOR_ARRAY || a.arg > OMG_MAX_LABELS)
		return false;
	h->num_labels = (uint32_t)a.arg;
	for (uint32_t i = 0; i < h->num_labels; i++)
		if (!read_text(r, OMG_MAX_LABEL_LEN, &h->labels[i]))
			return false;
	return true;
}

static bool header_value(uint32_t key, omg_cbor_reader *r, omg_pkg_header *h)
{
	uint64_t v;

	switch (key) {
	case H_V:
		return read_uint(r, &v) && v == PKG_FORMAT_VERSION;
	case H_MODEL_ID:
		return read_text(r, OMG_MAX_ID_LEN, &h->model_id);
	case H_MODEL_VERSION:
		return read_uint(r, &h->model_version);
	case H_RUNTIME:
		return read_text(r, OMG_MAX_ID_LEN, &h->runtime);
	case H_INPUT:
		return read_input(r, &h->frontend);
	case H_LABELS:
		return read_labels(r, h);
	case H_PT_SHA256:
		return read_fixed(r, h->pt_sha256, PKG_SHA256_LEN);
	case H_PT_LEN:
		return read_uint(r, &h->pt_len);
	case H_SEG_SIZE:
		return read_uint(r, &h->seg_size) && h->seg_size >= 1;
	case H_NONCE_PREFIX:
		return read_fixed(r, h->nonce_prefix, PKG_NONCE_PREFIX_LEN);
	default:
		return false;
	}
}

static bool header_ok(const uint8_t *raw, size_t len, omg_pkg_header *h)
{
	omg_cbor_reader r = { raw, len, 0 };
	omg_cbor_item m, k;
	uint32_t key, seen = 0;

	if (!omg_cbor_check(raw, len, OMG_CBOR_CANONICAL) || !omg_cbor_head(&r, &m) ||
	    m.type != OMG_CBOR_MAP)
		return false;
	fe_when_absent(&h->frontend);
	for (uint64_t i = 0; i < m.arg; i++) {
		if (!omg_cbor_head(&r, &k))
			return false;
		if (!omg_cbor_text_in(&k, h_names, H_COUNT, &key)) {
			if (!omg_cbor_skip(&r))
				return false;	/* other keys: passed over, as in Python */
			continue;
		}
		if ((seen & (1u << key)) || !header_value(key, &r, h))
			return false;
		seen |= 1u << key;
	}
	return seen == (1u << H_COUNT) - 1;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool package_ok(const uint8_t *blob, size_t len, omg_pkg_header *h)
{
	size_t hlen, slen;

	if (len < PKG_MAGIC_LEN + 6 || memcmp(blob, pkg_magic, PKG_MAGIC_LEN))
		return false;
	hlen = be32(blob + 8);
	if (hlen > OMG_MAX_HEADER || hlen > len - 14)
		return false;
	slen = (size_t)blob[12 + hlen] << 8 | blob[13 + hlen];
	if (slen != PKG_SIG_LEN || slen > len - 14 - hlen)
		return false;
	if (!header_ok(blob + 12, hlen, h))
		return false;
	h->header_raw.ptr = blob + 12;
	h->header_raw.len = hlen;
	h->signed_prefix.ptr = blob;
	h->signed_prefix.len = 12 + hlen;
	h->signature.ptr = blob + 14 + hlen;
	h->signature.len = slen;
	h->body_offset = 14 + hlen + slen;
	return true;
}

omg_status omg_package_parse_header(const uint8_t *blob, size_t len, omg_pkg_header *h)
{
	omg_status res = OMG_RESULT_PACKAGE_INTEGRITY;

	if (!h)
		return res;
	memset(h, 0, sizeof(*h));
	if (blob && package_ok(blob, len, h))
		res = OMG_OK;
	else
		memset(h, 0, sizeof(*h));
	return res;
}
