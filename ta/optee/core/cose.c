/*
 * cose.c - the structure of a COSE_Sign1 (RFC 9052), as ta/omg_ta/cose.py
 * parse_sign1 checks it; the signature itself is the caller's to check.
 *
 *   [tag 18] [ protected: bstr .cbor {1: -8 (EdDSA), ? 4: kid (bstr), * label: any},
 *              unprotected: {? 4: kid (bstr), ? 33: x5chain, * label: any},
 *              payload: bstr, signature: bstr .size 64 ]
 *
 * Stricter than the Python parser in a few places (each a refusal, never an
 * acceptance Python would not give): the kid must be a byte string and may
 * not be in both buckets, alg may not be in the unprotected bucket, x5chain
 * is a certificate or an array of them, and the CBOR rules of cbor.h hold.
 */
#include <string.h>

#include "cbor.h"

#define COSE_TAG_SIGN1 18
#define COSE_H_ALG 1
#define COSE_H_KID 4
#define COSE_H_X5CHAIN 33
#define COSE_ALG_EDDSA_ARG 7	/* -8 = -1 - 7 */
#define COSE_SIG_LEN 64

static bool is_label(const omg_cbor_item *k, uint64_t label)
{
	return k->type == OMG_CBOR_UINT && k->arg == label;
}

/* x5chain (RFC 9360): one certificate, or an array of them. */
static bool x5chain_ok(omg_cbor_reader *r)
{
	omg_cbor_item it, cert;

	if (!omg_cbor_head(r, &it))
		return false;
	if (it.type == OMG_CBOR_BSTR)
		return true;
	if (it.type != OMG_CBOR_ARRAY || !it.arg)
		return false;
	for (uint64_t i = 0; i < it.arg; i++)
		if (!omg_cbor_head(r, &cert) || cert.type != OMG_CBOR_BSTR)
			return false;
	return true;
}

static bool read_kid(omg_cbor_reader *r, omg_sign1 *out)
{
	omg_cbor_item v;

	if (out->kid.ptr || !omg_cbor_head(r, &v) || v.type != OMG_CBOR_BSTR)
		return false;	/* in both buckets, or not bytes */
	out->kid = v.str;
	return true;
}

/* The protected bucket: a bstr holding a map with alg EdDSA. */
static bool protected_ok(const omg_bytes *raw, omg_sign1 *out)
{
	omg_cbor_reader r = { raw->ptr, raw->len, 0 };
	omg_cbor_item m, k, v;
	bool alg = false;

	if (!raw->len || !omg_cbor_check(raw->ptr, raw->len, 0))
		return false;
	if (!omg_cbor_head(&r, &m) || m.type != OMG_CBOR_MAP)
		return false;
	for (uint64_t i = 0; i < m.arg; i++) {
		if (!omg_cbor_head(&r, &k))
			return false;
		if (is_label(&k, COSE_H_ALG)) {
			if (!omg_cbor_head(&r, &v) || v.type != OMG_CBOR_NINT ||
			    v.arg != COSE_ALG_EDDSA_ARG)
				return false;
			alg = true;
		} else if (is_label(&k, COSE_H_KID)) {
			if (!read_kid(&r, out))
				return false;
		} else if (!omg_cbor_skip(&r)) {
			return false;
		}
	}
	return alg;
}

static bool unprotected_ok(omg_cbor_reader *r, omg_sign1 *out)
{
	omg_cbor_item m, k;
	bool ok;

	if (!omg_cbor_head(r, &m) || m.type != OMG_CBOR_MAP)
		return false;
	for (uint64_t i = 0; i < m.arg; i++) {
		if (!omg_cbor_head(r, &k))
			return false;
		if (is_label(&k, COSE_H_ALG))
			ok = false;	/* alg belongs in the protected bucket */
		else if (is_label(&k, COSE_H_KID))
			ok = read_kid(r, out);
		else if (is_label(&k, COSE_H_X5CHAIN))
			ok = x5chain_ok(r);
		else
			ok = omg_cbor_skip(r);
		if (!ok)
			return false;
	}
	return true;
}

static bool read_bstr(omg_cbor_reader *r, omg_bytes *b)
{
	omg_cbor_item it;

	if (!omg_cbor_head(r, &it) || it.type != OMG_CBOR_BSTR)
		return false;
	*b = it.str;
	return true;
}

static bool sign1_ok(const uint8_t *msg, size_t len, omg_sign1 *out)
{
	omg_cbor_reader r = { msg, len, 0 };
	omg_cbor_item it;

	if (!omg_cbor_check(msg, len, OMG_CBOR_TAG18) || !omg_cbor_head(&r, &it))
		return false;
	if (it.type == OMG_CBOR_TAG &&
	    (it.arg != COSE_TAG_SIGN1 || !omg_cbor_head(&r, &it)))
		return false;
	if (it.type != OMG_CBOR_ARRAY || it.arg != 4)
		return false;
	if (!read_bstr(&r, &out->protected_raw) || !protected_ok(&out->protected_raw, out))
		return false;
	if (!unprotected_ok(&r, out) || !read_bstr(&r, &out->payload))
		return false;
	if (!read_bstr(&r, &out->signature) || out->signature.len != COSE_SIG_LEN)
		return false;
	return r.pos == len;
}

omg_status omg_cose_parse_sign1(const uint8_t *msg, size_t len, omg_status error,
				omg_sign1 *out)
{
	omg_status res = error != OMG_OK ? error : OMG_RESULT_BAD_PARAMETERS;

	if (!out)
		return res;
	memset(out, 0, sizeof(*out));
	if (msg && len <= OMG_MAX_MESSAGE && sign1_ok(msg, len, out))
		res = OMG_OK;
	else
		memset(out, 0, sizeof(*out));
	return res;
}
