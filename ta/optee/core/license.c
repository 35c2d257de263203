/*
 * license.c - the license payload (docs/formats.md), the CBOR map inside the
 * license's COSE_Sign1, as ta/omg_ta/license.py parse_payload checks it:
 *
 *   {v: 1, license_id: bstr .size 16, model_id: tstr, model_version: uint,
 *    device_id: bstr, measurement: bstr .size 32, issued_at: int,
 *    policy: {not_after: int, min_version: int, ? budget: uint / null,
 *             scores: bool},
 *    kem: "X25519" / "MLKEM768-X25519", wrapped_key: bstr}
 *
 * Other keys are passed over, as in Python. Anything malformed is
 * OMG_RESULT_LICENSE_INVALID. Stricter than Python (refusals only): booleans
 * are not integers, model_version is unsigned, signed fields fit an int64_t,
 * model_id and device_id are at most OMG_MAX_ID_LEN bytes, and the rules of
 * cbor.h hold (canonical encoding, no duplicate keys, no tags, no trailing
 * bytes).
 */
#include <string.h>

#include "cbor.h"

#define LIC_FORMAT_VERSION 1
#define LIC_ID_LEN 16
#define LIC_MEASUREMENT_LEN 32

enum {
	L_V, L_LICENSE_ID, L_MODEL_ID, L_MODEL_VERSION, L_DEVICE_ID, L_MEASUREMENT,
	L_ISSUED_AT, L_POLICY, L_KEM, L_WRAPPED_KEY, L_COUNT
};

static const char *const l_names[L_COUNT] = {
	"v", "license_id", "model_id", "model_version", "device_id", "measurement",
	"issued_at", "policy", "kem", "wrapped_key",
};

enum { P_NOT_AFTER, P_MIN_VERSION, P_BUDGET, P_SCORES, P_COUNT };

static const char *const p_names[P_COUNT] = {
	"not_after", "min_version", "budget", "scores",
};

#define P_REQUIRED ((1u << P_NOT_AFTER) | (1u << P_MIN_VERSION) | (1u << P_SCORES))

static const char *const kems[] = { "X25519", "MLKEM768-X25519" };

static bool policy_value(uint32_t key, const omg_cbor_item *v, omg_license *out)
{
	switch (key) {
	case P_NOT_AFTER:
		return omg_cbor_get_int64(v, &out->not_after);
	case P_MIN_VERSION:
		return omg_cbor_get_int64(v, &out->min_version);
	case P_BUDGET:
		if (v->type == OMG_CBOR_NULL)
			return true;	/* unlimited, as when absent */
		out->has_budget = true;
		out->budget = v->arg;
		return v->type == OMG_CBOR_UINT;
	case P_SCORES:
		out->scores = v->type == OMG_CBOR_TRUE;
		return v->type == OMG_CBOR_TRUE || v->type == OMG_CBOR_FALSE;
	default:
		return false;
	}
}

static bool read_policy(omg_cbor_reader *r, omg_license *out)
{
	omg_cbor_item m, k, v;
	uint32_t key, seen = 0;
	bool ok;

	if (!omg_cbor_head(r, &m) || m.type != OMG_CBOR_MAP)
		return false;
	for (uint64_t i = 0; i < m.arg; i++) {
		if (!omg_cbor_head(r, &k))
			return false;
		if (!omg_cbor_text_in(&k, p_names, P_COUNT, &key)) {
			ok = omg_cbor_skip(r);
		} else {
			ok = !(seen & (1u << key)) && omg_cbor_head(r, &v) &&
			     policy_value(key, &v, out);
			seen |= 1u << key;
		}
		if (!ok)
			return false;
	}
	return (seen & P_REQUIRED) == P_REQUIRED;
}

static bool read_value(uint32_t key, const omg_cbor_item *v, omg_license *out)
{
	uint32_t kem;

	switch (key) {
	case L_V:
		return v->type == OMG_CBOR_UINT && v->arg == LIC_FORMAT_VERSION;
	case L_LICENSE_ID:
		if (v->type != OMG_CBOR_BSTR || v->str.len != LIC_ID_LEN)
			return false;
		memcpy(out->license_id, v->str.ptr, LIC_ID_LEN);
		return true;
	case L_MODEL_ID:
		out->model_id = v->str;
		return v->type == OMG_CBOR_TSTR && v->str.len <= OMG_MAX_ID_LEN;
	case L_MODEL_VERSION:
		out->model_version = v->arg;
		return v->type == OMG_CBOR_UINT;
	case L_DEVICE_ID:
		out->device_id = v->str;
		return v->type == OMG_CBOR_BSTR && v->str.len <= OMG_MAX_ID_LEN;
	case L_MEASUREMENT:
		if (v->type != OMG_CBOR_BSTR || v->str.len != LIC_MEASUREMENT_LEN)
			return false;
		memcpy(out->measurement, v->str.ptr, LIC_MEASUREMENT_LEN);
		return true;
	case L_ISSUED_AT:
		return omg_cbor_get_int64(v, &out->issued_at);
	case L_KEM:
		out->kem = v->str;
		return omg_cbor_text_in(v, kems, 2, &kem);
	case L_WRAPPED_KEY:
		out->wrapped_key = v->str;
		return v->type == OMG_CBOR_BSTR;
	default:
		return false;
	}
}

static bool payload_ok(const uint8_t *p, size_t len, omg_license *out)
{
	omg_cbor_reader r = { p, len, 0 };
	omg_cbor_item m, k, v;
	uint32_t key, seen = 0;
	bool ok;

	if (!omg_cbor_check(p, len, OMG_CBOR_CANONICAL) || !omg_cbor_head(&r, &m) ||
	    m.type != OMG_CBOR_MAP)
		return false;
	for (uint64_t i = 0; i < m.arg; i++) {
		if (!omg_cbor_head(&r, &k))
			return false;
		if (!omg_cbor_text_in(&k, l_names, L_COUNT, &key)) {
			ok = omg_cbor_skip(&r);	/* other keys: passed over, as in Python */
		} else {
			if (seen & (1u << key))
				ok = false;
			else if (key == L_POLICY)
				ok = read_policy(&r, out);
			else
				ok = omg_cbor_head(&r, &v) && read_value(key, &v, out);
			seen |= 1u << key;
		}
		if (!ok)
			return false;
	}
	return seen == (1u << L_COUNT) - 1;
}

omg_status omg_license_parse_payload(const uint8_t *payload, size_t len, omg_license *out)
{
	omg_status res = OMG_RESULT_LICENSE_INVALID;

	if (!out)
		return res;
	memset(out, 0, sizeof(*out));
	if (payload && len <= OMG_MAX_MESSAGE && payload_ok(payload, len, out))
		res = OMG_OK;
	else
		memset(out, 0, sizeof(*out));
	return res;
}
