// SPDX-License-Identifier: BSD-2-Clause
/*
 * omg_ta.c - the keyword TA for OP-TEE: the GlobalPlatform glue around the
 * portable core (../core), implementing the contract of ../include/omg_ta.h
 * with the same commands, formats and checks as the Python TA
 * (ta/omg_ta/entry.py).
 *
 * One entry point dispatches to one small handler per command; each checks
 * its parameter types first and fails with a result code of the contract.
 * Operational failures leave a one-line message that CMD_LAST_ERROR returns
 * (GP carries only a code); security failures leave their fixed text only.
 *
 * What the core of OP-TEE does for this TA (the measurement, the sealing
 * key, the device key and the attestation token) is the OMG pseudo-TA's
 * (../pta, ../include/omg_pta.h). Cryptography is the GP Internal API's:
 * Ed25519, X25519, HMAC-SHA256, SHA-256, AES-256-GCM. HPKE (RFC 9180, base
 * mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) is composed
 * here from those primitives, as the RFC defines it.
 */

#include <stdarg.h>
#include <string.h>
#include <tee_internal_api.h>
#include <tee_internal_api_extensions.h>

#include "omg_cbor_write.h"
#include "omg_core.h"
#include "omg_pta.h"
#include "omg_ta.h"

#ifndef OMG_VENDOR_KEY_BYTES
#error "build with OMG_VENDOR_KEY_BYTES: the vendor's Ed25519 public key, as {0x..,...}"
#endif

static const uint8_t vendor_key[32] = OMG_VENDOR_KEY_BYTES;

#define MAX_LICENSE		(16 * 1024)
#define MAX_SEALED		512
#define SEAL_MAGIC		"OMGSEAL1"
#define SEAL_MAGIC_LEN		8
#define LICENSE_KEY_CONTEXT	"OMG-LICENSE-KEY-v1"
#define PKG_SIG_CONTEXT		"OMG-PKG-SIG-v1"
#define TAG_LEN			16
#define MODEL_KEY_LEN		32
#define MAX_CLASSES		512
#define ERR_LEN			256

static const TEE_UUID pta_uuid = OMG_PTA_UUID;

/* the labels of one classification, when scores go out first */
static uint16_t labels[OMG_MAX_BATCH];

/* One session per TA instance (TA_FLAGS 0): the instance's state is global. */
static struct {
	TEE_TASessionHandle pta;
	uint8_t measurement[32];
	uint8_t device_id[OMG_PTA_DEVICE_ID_LEN];
	/* key transport: made at the first CMD_GET_ATTESTATION of the session */
	TEE_ObjectHandle kt;
	uint8_t kt_pub[32];
	/* the model, after CMD_INITIALIZE */
	bool ready;
	uint8_t *model;
	size_t model_len;
	void *arena;
	omg_engine *engine;
	omg_io io;
	void *fe_mem;
	omg_frontend *fe;
	omg_fe_plan fe_plan;
	float *features;
	int8_t *input;
	uint32_t num_labels;
	bool scores_allowed;
	bool has_budget;
	char budget_name[8 + 32 + 1];
	char last_error[ERR_LEN];
} g;

/* -- failures ------------------------------------------------------------------ */

static TEE_Result fail(TEE_Result code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	code = omg_vfail(g.last_error, sizeof(g.last_error), code, fmt, ap);
	va_end(ap);
	return code;
}

/* A security refusal: its fixed meaning only, no detail. */
static TEE_Result refuse(TEE_Result code)
{
	g.last_error[0] = '\0';
	return code;
}

/* -- the pseudo-TA ---------------------------------------------------------------- */

static TEE_Result pta_call(uint32_t cmd, uint32_t types, TEE_Param p[TEE_NUM_PARAMS])
{
	uint32_t origin = 0;

	return TEE_InvokeTACommand(g.pta, TEE_TIMEOUT_INFINITE, cmd, types, p, &origin);
}

static TEE_Result pta_seal_key(const char *label, uint8_t key[32])
{
	TEE_Param p[TEE_NUM_PARAMS] = { };

	p[0].memref.buffer = (void *)label;
	p[0].memref.size = strlen(label);
	p[1].memref.buffer = key;
	p[1].memref.size = 32;
	return pta_call(OMG_PTA_CMD_SEAL_KEY,
			TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_MEMREF_OUTPUT,
					TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE), p);
}

/* -- primitives of the GP Internal API ------------------------------------------- */

struct part {
	const void *p;
	size_t n;
};

static TEE_Result sha256(const struct part *parts, size_t count, uint8_t out[32])
{
	TEE_OperationHandle op = TEE_HANDLE_NULL;
	size_t len = 32;
	TEE_Result res = TEE_AllocateOperation(&op, TEE_ALG_SHA256, TEE_MODE_DIGEST, 0);

	if (res)
		return res;
	for (size_t i = 0; i + 1 < count; i++)
		TEE_DigestUpdate(op, parts[i].p, parts[i].n);
	res = TEE_DigestDoFinal(op, count ? parts[count - 1].p : NULL, count ? parts[count - 1].n : 0,
				out, &len);
	TEE_FreeOperation(op);
	return res;
}

/* An operation with its 256-bit key set (the transient object is freed: the
 * operation keeps its own copy of the key). */
static TEE_Result keyed_op(uint32_t alg, uint32_t mode, uint32_t obj_type, uint32_t attr_id,
			   const uint8_t key[32], TEE_OperationHandle *op)
{
	TEE_ObjectHandle k = TEE_HANDLE_NULL;
	TEE_Attribute attr = { };
	TEE_Result res = TEE_AllocateOperation(op, alg, mode, 256);

	if (res)
		return res;
	res = TEE_AllocateTransientObject(obj_type, 256, &k);
	if (!res) {
		TEE_InitRefAttribute(&attr, attr_id, key, 32);
		res = TEE_PopulateTransientObject(k, &attr, 1);
	}
	if (!res)
		res = TEE_SetOperationKey(*op, k);
	TEE_FreeTransientObject(k);
	if (res) {
		TEE_FreeOperation(*op);
		*op = TEE_HANDLE_NULL;
	}
	return res;
}

static TEE_Result hmac_sha256(const uint8_t key[32], const struct part *parts, size_t count,
			      uint8_t out[32])
{
	TEE_OperationHandle op = TEE_HANDLE_NULL;
	size_t len = 32;
	TEE_Result res = keyed_op(TEE_ALG_HMAC_SHA256, TEE_MODE_MAC, TEE_TYPE_HMAC_SHA256,
				  TEE_ATTR_SECRET_VALUE, key, &op);

	if (res)
		return res;
	TEE_MACInit(op, NULL, 0);
	for (size_t i = 0; i + 1 < count; i++)
		TEE_MACUpdate(op, parts[i].p, parts[i].n);
	res = TEE_MACComputeFinal(op, count ? parts[count - 1].p : NULL,
				  count ? parts[count - 1].n : 0, out, &len);
	TEE_FreeOperation(op);
	return res;
}

static TEE_Result aes_gcm(uint32_t mode, const uint8_t key[32], const uint8_t *nonce, size_t nonce_len,
			  const void *aad, size_t aad_len, const void *in, size_t in_len, void *out,
			  uint8_t tag[TAG_LEN])
{
	TEE_OperationHandle op = TEE_HANDLE_NULL;
	size_t out_len = in_len, tag_len = TAG_LEN;
	TEE_Result res = keyed_op(TEE_ALG_AES_GCM, mode, TEE_TYPE_AES, TEE_ATTR_SECRET_VALUE, key, &op);

	if (res)
		return res;
	res = TEE_AEInit(op, nonce, nonce_len, TAG_LEN * 8, aad_len, in_len);
	if (res)
		goto out;
	if (aad_len)
		TEE_AEUpdateAAD(op, aad, aad_len);
	if (mode == TEE_MODE_DECRYPT)
		res = TEE_AEDecryptFinal(op, in, in_len, out, &out_len, tag, TAG_LEN);
	else
		res = TEE_AEEncryptFinal(op, in, in_len, out, &out_len, tag, &tag_len);
	if (!res && out_len != in_len)
		res = TEE_ERROR_GENERIC;
out:
	TEE_FreeOperation(op);
	return res;
}

static TEE_Result ed25519_verify(const uint8_t pub[32], const void *msg, size_t len,
				 const uint8_t sig[64])
{
	TEE_OperationHandle op = TEE_HANDLE_NULL;
	TEE_Result res = keyed_op(TEE_ALG_ED25519, TEE_MODE_VERIFY, TEE_TYPE_ED25519_PUBLIC_KEY,
				  TEE_ATTR_ED25519_PUBLIC_VALUE, pub, &op);

	if (res)
		return res;
	res = TEE_AsymmetricVerifyDigest(op, NULL, 0, msg, len, sig, 64);
	TEE_FreeOperation(op);
	return res;
}

static TEE_Result x25519(const uint8_t peer[32], uint8_t out[32])
{
	TEE_OperationHandle op = TEE_HANDLE_NULL;
	TEE_ObjectHandle secret = TEE_HANDLE_NULL;
	TEE_Attribute attr = { };
	size_t len = 32;
	TEE_Result res = TEE_AllocateOperation(&op, TEE_ALG_X25519, TEE_MODE_DERIVE, 256);

	if (res)
		return res;
	res = TEE_SetOperationKey(op, g.kt);
	if (!res)
		res = TEE_AllocateTransientObject(TEE_TYPE_GENERIC_SECRET, 256, &secret);
	if (res)
		goto out;
	TEE_InitRefAttribute(&attr, TEE_ATTR_X25519_PUBLIC_VALUE, peer, 32);
	TEE_DeriveKey(op, &attr, 1, secret);
	res = TEE_GetObjectBufferAttribute(secret, TEE_ATTR_SECRET_VALUE, out, &len);
	if (!res && len != 32)
		res = TEE_ERROR_GENERIC;
out:
	TEE_FreeTransientObject(secret);
	TEE_FreeOperation(op);
	return res;
}

/* -- HPKE, base mode, single shot open (RFC 9180 sections 4, 5.1, 7.1) ---------- */

static const uint8_t kem_suite[5] = { 'K', 'E', 'M', 0x00, 0x20 };
static const uint8_t hpke_suite[10] = { 'H', 'P', 'K', 'E', 0x00, 0x20, 0x00, 0x01, 0x00, 0x02 };
static const uint8_t zeros32[32];

/* LabeledExtract(salt, label, ikm) = HMAC(salt, "HPKE-v1" || suite || label || ikm);
 * an empty salt is HashLen zeros (HMAC pads the key with zeros anyway) */
static TEE_Result labeled_extract(const uint8_t *salt, const uint8_t *suite, size_t suite_len,
				  const char *label, const void *ikm, size_t ikm_len, uint8_t out[32])
{
	struct part parts[] = { { "HPKE-v1", 7 }, { suite, suite_len }, { label, strlen(label) },
				{ ikm, ikm_len } };

	return hmac_sha256(salt ? salt : zeros32, parts, 4, out);
}

/* LabeledExpand(prk, label, info, L) for L <= 32: one HMAC block */
static TEE_Result labeled_expand(const uint8_t prk[32], const uint8_t *suite, size_t suite_len,
				 const char *label, const void *info, size_t info_len, size_t len,
				 uint8_t *out)
{
	uint8_t l[2] = { 0, (uint8_t)len };
	uint8_t counter = 1, block[32] = { };
	struct part parts[] = { { l, 2 }, { "HPKE-v1", 7 }, { suite, suite_len },
				{ label, strlen(label) }, { info, info_len }, { &counter, 1 } };
	TEE_Result res = TEE_SUCCESS;

	if (len > 32)
		return TEE_ERROR_BAD_PARAMETERS;
	res = hmac_sha256(prk, parts, 6, block);
	if (!res)
		memcpy(out, block, len);
	TEE_MemFill(block, 0, sizeof(block));
	return res;
}

static TEE_Result hpke_open(const uint8_t *wrapped, size_t wrapped_len, const void *info,
			    size_t info_len, uint8_t key_out[MODEL_KEY_LEN])
{
	uint8_t dh[32] = { }, kem_ctx[64] = { }, eae_prk[32] = { }, shared[32] = { };
	uint8_t psk_id_hash[32] = { }, info_hash[32] = { }, ksc[65] = { }, secret[32] = { };
	uint8_t key[32] = { }, nonce[12] = { };
	const uint8_t *enc = wrapped, *ct = wrapped + 32;
	size_t ct_len = wrapped_len - 32 - TAG_LEN;
	TEE_Result res = TEE_SUCCESS;

	if (wrapped_len != 32 + MODEL_KEY_LEN + TAG_LEN)
		return TEE_ERROR_BAD_PARAMETERS;
	/* Decap: dh = X25519(skR, enc); kem_context = enc || pkR */
	res = x25519(enc, dh);
	memcpy(kem_ctx, enc, 32);
	memcpy(kem_ctx + 32, g.kt_pub, 32);
	if (!res)
		res = labeled_extract(NULL, kem_suite, sizeof(kem_suite), "eae_prk", dh, 32, eae_prk);
	if (!res)
		res = labeled_expand(eae_prk, kem_suite, sizeof(kem_suite), "shared_secret", kem_ctx, 64,
				     32, shared);
	/* KeySchedule, mode base: psk = psk_id = "" */
	if (!res)
		res = labeled_extract(NULL, hpke_suite, sizeof(hpke_suite), "psk_id_hash", NULL, 0,
				      psk_id_hash);
	if (!res)
		res = labeled_extract(NULL, hpke_suite, sizeof(hpke_suite), "info_hash", info, info_len,
				      info_hash);
	ksc[0] = 0x00;
	memcpy(ksc + 1, psk_id_hash, 32);
	memcpy(ksc + 33, info_hash, 32);
	if (!res)
		res = labeled_extract(shared, hpke_suite, sizeof(hpke_suite), "secret", NULL, 0, secret);
	if (!res)
		res = labeled_expand(secret, hpke_suite, sizeof(hpke_suite), "key", ksc, sizeof(ksc), 32,
				     key);
	if (!res)
		res = labeled_expand(secret, hpke_suite, sizeof(hpke_suite), "base_nonce", ksc,
				     sizeof(ksc), 12, nonce);
	/* Open, sequence 0: the nonce is base_nonce; no AAD */
	if (!res)
		res = aes_gcm(TEE_MODE_DECRYPT, key, nonce, 12, NULL, 0, ct, ct_len, key_out,
			      (uint8_t *)ct + ct_len);
	TEE_MemFill(dh, 0, sizeof(dh));
	TEE_MemFill(shared, 0, sizeof(shared));
	TEE_MemFill(secret, 0, sizeof(secret));
	TEE_MemFill(key, 0, sizeof(key));
	TEE_MemFill(eae_prk, 0, sizeof(eae_prk));
	return res;
}

/* -- persistent state: counters and budgets (secure storage, TA-private) ------------- */

/*
 * Sessions run concurrently (one TA instance each), so every read-modify-write
 * of a value holds the object open for exclusive access (no
 * TEE_DATA_FLAG_SHARE_*): another session's open fails with
 * TEE_ERROR_ACCESS_CONFLICT (OP-TEE's tee_pobj_check_access) and waits its
 * turn, a millisecond at a time, for at most STORE_WAIT_MS.
 */
#define STORE_WAIT_MS 10000

static TEE_Result store_open(const char *name, TEE_ObjectHandle *o)
{
	uint32_t flags = TEE_DATA_FLAG_ACCESS_READ | TEE_DATA_FLAG_ACCESS_WRITE;
	TEE_Result res = TEE_ERROR_ACCESS_CONFLICT;

	for (uint32_t waited = 0; res == TEE_ERROR_ACCESS_CONFLICT; waited++) {
		res = TEE_OpenPersistentObject(TEE_STORAGE_PRIVATE, name, strlen(name), flags, o);
		if (res != TEE_ERROR_ACCESS_CONFLICT)
			break;
		if (waited == STORE_WAIT_MS)
			return fail(TEE_ERROR_BUSY, "secure storage stayed busy for %d ms",
				    STORE_WAIT_MS);
		TEE_Wait(1);
	}
	return res;
}

static TEE_Result store_read(TEE_ObjectHandle o, uint64_t *value)
{
	uint8_t b[8] = { };
	size_t n = 0;
	TEE_Result res = TEE_ReadObjectData(o, b, sizeof(b), &n);

	if (res)
		return res;
	if (n != sizeof(b))
		return TEE_ERROR_CORRUPT_OBJECT;
	*value = 0;
	for (size_t i = 0; i < 8; i++)
		*value = *value << 8 | b[i];
	return TEE_SUCCESS;
}

static void store_encode(uint64_t value, uint8_t b[8])
{
	for (size_t i = 0; i < 8; i++)
		b[i] = (uint8_t)(value >> (56 - 8 * i));
}

static TEE_Result store_get(const char *name, uint64_t *value, bool *found)
{
	TEE_ObjectHandle o = TEE_HANDLE_NULL;
	TEE_Result res = store_open(name, &o);

	*found = false;
	*value = 0;
	if (res == TEE_ERROR_ITEM_NOT_FOUND)
		return TEE_SUCCESS;
	if (res)
		return res;
	res = store_read(o, value);
	TEE_CloseObject(o);
	*found = !res;
	return res;
}

enum store_op {
	STORE_ADVANCE, /* a version counter: raise to arg; refused if already past it */
	STORE_START,   /* a budget: create with arg unless it exists */
	STORE_SPEND,   /* a budget: take arg off; refused if less is left */
};

/* One atomic read-modify-write; *value is what the object holds afterwards. */
static TEE_Result store_update(const char *name, enum store_op op, uint64_t arg,
			       uint64_t *value)
{
	TEE_ObjectHandle o = TEE_HANDLE_NULL;
	uint32_t flags = TEE_DATA_FLAG_ACCESS_READ | TEE_DATA_FLAG_ACCESS_WRITE;
	uint8_t b[8] = { };
	uint64_t cur = 0;
	TEE_Result res = TEE_SUCCESS;

	for (;;) {
		res = store_open(name, &o);
		if (res != TEE_ERROR_ITEM_NOT_FOUND)
			break;
		if (op == STORE_SPEND)
			return refuse(OMG_RESULT_BUDGET_EXHAUSTED);
		/* created whole, with its value, or not at all (no TEE_DATA_FLAG_OVERWRITE:
		 * if a concurrent session created it first, open that one instead) */
		store_encode(arg, b);
		res = TEE_CreatePersistentObject(TEE_STORAGE_PRIVATE, name, strlen(name), flags,
						 TEE_HANDLE_NULL, b, sizeof(b), &o);
		if (res == TEE_ERROR_ACCESS_CONFLICT)
			continue;
		if (!res) {
			TEE_CloseObject(o);
			*value = arg;
		}
		return res;
	}
	if (res)
		return res;
	res = store_read(o, &cur);
	if (!res && op == STORE_ADVANCE && cur > arg)
		res = refuse(OMG_RESULT_ROLLBACK);
	else if (!res && op == STORE_SPEND && cur < arg)
		res = refuse(OMG_RESULT_BUDGET_EXHAUSTED);
	if (!res && (op == STORE_SPEND || (op == STORE_ADVANCE && cur < arg))) {
		cur = op == STORE_SPEND ? cur - arg : arg;
		store_encode(cur, b);
		res = TEE_SeekObjectData(o, 0, TEE_DATA_SEEK_SET);
		if (!res)
			res = TEE_WriteObjectData(o, b, sizeof(b));
	}
	TEE_CloseObject(o);
	if (!res)
		*value = cur;
	return res;
}

/* -- shared by the handlers ----------------------------------------------------------- */

static bool bytes_eq(omg_bytes b, const void *p, size_t n)
{
	return b.len == n && !memcmp(b.ptr, p, n);
}

/* A copy of a memref input (what is checked must not change under the check). */
static TEE_Result copy_in(const TEE_Param *p, size_t max, uint8_t **out, size_t *len)
{
	if (!p->memref.buffer || p->memref.size == 0 || p->memref.size > max)
		return fail(OMG_RESULT_BAD_PARAMETERS, "an input of %u bytes (at most %u)",
			    (unsigned int)p->memref.size, (unsigned int)max);
	*out = TEE_Malloc(p->memref.size, TEE_MALLOC_FILL_ZERO);
	if (!*out)
		return fail(OMG_RESULT_OUT_OF_MEMORY, "no heap for a %u-byte input",
			    (unsigned int)p->memref.size);
	TEE_MemMove(*out, p->memref.buffer, p->memref.size);
	*len = p->memref.size;
	return TEE_SUCCESS;
}

static TEE_Result put_out(TEE_Param *p, const void *data, size_t len)
{
	if (p->memref.size < len) {
		p->memref.size = len;
		return fail(OMG_RESULT_SHORT_BUFFER, "an output of %u bytes does not fit",
			    (unsigned int)len);
	}
	TEE_MemMove(p->memref.buffer, data, len);
	p->memref.size = len;
	return TEE_SUCCESS;
}

/* The license, signed by our vendor: parsed and verified, or LICENSE_INVALID. */
static TEE_Result check_license(const uint8_t *blob, size_t len, omg_license *lic)
{
	uint8_t kid[32] = { };
	struct part kp = { vendor_key, 32 };
	omg_sign1 s = { };
	struct omg_cbw w = { };
	TEE_Result res = TEE_SUCCESS;

	if (omg_cose_parse_sign1(blob, len, OMG_RESULT_LICENSE_INVALID, &s))
		return refuse(OMG_RESULT_LICENSE_INVALID);
	res = sha256(&kp, 1, kid);
	if (res)
		return res;
	if (!bytes_eq(s.kid, kid, 8))
		return refuse(OMG_RESULT_LICENSE_INVALID);
	/* Sig_structure = ["Signature1", protected, h'', payload] */
	w.max = s.protected_raw.len + s.payload.len + 32;
	w.p = TEE_Malloc(w.max, 0);
	if (!w.p)
		return fail(OMG_RESULT_OUT_OF_MEMORY, "no heap to verify the license");
	omg_cbw_array(&w, 4);
	omg_cbw_text(&w, "Signature1", 10);
	omg_cbw_bytes(&w, s.protected_raw.ptr, s.protected_raw.len);
	omg_cbw_bytes(&w, NULL, 0);
	omg_cbw_bytes(&w, s.payload.ptr, s.payload.len);
	res = w.over ? TEE_ERROR_SHORT_BUFFER : ed25519_verify(vendor_key, w.p, w.n, s.signature.ptr);
	TEE_Free(w.p);
	if (res)
		return refuse(OMG_RESULT_LICENSE_INVALID);
	if (omg_license_parse_payload(s.payload.ptr, s.payload.len, lic))
		return refuse(OMG_RESULT_LICENSE_INVALID);
	if (!bytes_eq(lic->device_id, g.device_id, sizeof(g.device_id)))
		return refuse(OMG_RESULT_DEVICE_MISMATCH);
	return TEE_SUCCESS;
}

/* HPKE info: "OMG-LICENSE-KEY-v1" || CBOR [license_id, model_id, version, device, M] */
static size_t key_info(const omg_license *lic, uint8_t *out, size_t max)
{
	struct omg_cbw w = { .p = out, .max = max };

	omg_cbw_put(&w, LICENSE_KEY_CONTEXT, sizeof(LICENSE_KEY_CONTEXT) - 1);
	omg_cbw_array(&w, 5);
	omg_cbw_bytes(&w, lic->license_id, 16);
	omg_cbw_text(&w, (const char *)lic->model_id.ptr, lic->model_id.len);
	omg_cbw_uint(&w, lic->model_version);
	omg_cbw_bytes(&w, lic->device_id.ptr, lic->device_id.len);
	omg_cbw_bytes(&w, lic->measurement, 32);
	return w.over ? 0 : w.n;
}

static void wipe_model(void)
{
	if (g.model) {
		TEE_MemFill(g.model, 0, g.model_len);
		TEE_Free(g.model);
	}
	TEE_Free(g.arena);
	TEE_Free(g.fe_mem);
	TEE_Free(g.features);
	TEE_Free(g.input);
	g.model = NULL;
	g.arena = g.fe_mem = NULL;
	g.features = NULL;
	g.input = NULL;
	g.engine = NULL;
	g.fe = NULL;
	g.ready = false;
}

/* -- CMD_GET_ATTESTATION ----------------------------------------------------------------- */

static TEE_Result cmd_get_attestation(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	TEE_Param q[TEE_NUM_PARAMS] = { };
	uint8_t nonce[OMG_NONCE_MAX] = { }, token[1024] = { };
	size_t nonce_len = p[0].memref.size, len = sizeof(g.kt_pub);
	TEE_Result res = TEE_SUCCESS;

	if (pt != OMG_SIG_CMD_GET_ATTESTATION)
		return fail(OMG_RESULT_BAD_PARAMETERS, "get_attestation: wrong parameter types");
	if (nonce_len < OMG_NONCE_MIN || nonce_len > OMG_NONCE_MAX)
		return fail(OMG_RESULT_BAD_PARAMETERS, "nonce must be %d to %d bytes", OMG_NONCE_MIN,
			    OMG_NONCE_MAX);
	TEE_MemMove(nonce, p[0].memref.buffer, nonce_len);
	if (g.kt == TEE_HANDLE_NULL) {
		res = TEE_AllocateTransientObject(TEE_TYPE_X25519_KEYPAIR, 256, &g.kt);
		if (!res)
			res = TEE_GenerateKey(g.kt, 256, NULL, 0);
		if (!res)
			res = TEE_GetObjectBufferAttribute(g.kt, TEE_ATTR_X25519_PUBLIC_VALUE, g.kt_pub,
							   &len);
		if (!res && len != sizeof(g.kt_pub))
			res = TEE_ERROR_GENERIC;
		if (res) { /* no half-made key: the next call starts again */
			TEE_FreeTransientObject(g.kt);
			g.kt = TEE_HANDLE_NULL;
			TEE_MemFill(g.kt_pub, 0, sizeof(g.kt_pub));
			return res;
		}
	}
	q[0].memref.buffer = nonce;
	q[0].memref.size = nonce_len;
	q[1].memref.buffer = g.kt_pub;
	q[1].memref.size = sizeof(g.kt_pub);
	q[2].memref.buffer = token;
	q[2].memref.size = sizeof(token);
	res = pta_call(OMG_PTA_CMD_SIGN_CLAIMS,
		       TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_MEMREF_INPUT,
				       TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_NONE), q);
	if (res)
		return res;
	return put_out(&p[1], token, q[2].memref.size);
}

/* -- CMD_PROVISION ----------------------------------------------------------------------- */

static TEE_Result cmd_provision(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	uint8_t *blob = NULL, info[256] = { }, key[MODEL_KEY_LEN] = { }, seal[32] = { };
	uint8_t data[MODEL_KEY_LEN + 32 + 1 + OMG_MAX_ID_LEN] = { };
	uint8_t sealed[SEAL_MAGIC_LEN + 12 + sizeof(data) + TAG_LEN] = { };
	uint8_t aad[SEAL_MAGIC_LEN + 16 + 32] = { };
	size_t len = 0, info_len = 0, data_len = 0;
	struct part lp = { };
	omg_license lic = { };
	TEE_Result res = TEE_SUCCESS;

	if (pt != OMG_SIG_CMD_PROVISION)
		return fail(OMG_RESULT_BAD_PARAMETERS, "provision: wrong parameter types");
	if (g.kt == TEE_HANDLE_NULL)
		return fail(OMG_RESULT_BAD_STATE, "provision needs get_attestation first in this session");
	res = copy_in(&p[0], MAX_LICENSE, &blob, &len);
	if (res)
		return res;
	res = check_license(blob, len, &lic);
	if (res)
		goto out;
	if (memcmp(lic.measurement, g.measurement, 32)) {
		res = refuse(OMG_RESULT_LICENSE_INVALID); /* for another TA measurement */
		goto out;
	}
	if (!bytes_eq(lic.kem, "X25519", 6)) {
		res = fail(OMG_RESULT_CONFIG, "this TA unwraps X25519 licenses only (the GP API has no ML-KEM)");
		goto out;
	}
	info_len = key_info(&lic, info, sizeof(info));
	if (!info_len || lic.model_id.len > OMG_MAX_ID_LEN ||
	    hpke_open(lic.wrapped_key.ptr, lic.wrapped_key.len, info, info_len, key)) {
		res = refuse(OMG_RESULT_LICENSE_INVALID);
		goto out;
	}
	/* sealed data: model key || SHA-256(license) || len(model id) || model id */
	memcpy(data, key, MODEL_KEY_LEN);
	lp.p = blob;
	lp.n = len;
	res = sha256(&lp, 1, data + MODEL_KEY_LEN);
	if (res)
		goto out;
	data[MODEL_KEY_LEN + 32] = (uint8_t)lic.model_id.len;
	memcpy(data + MODEL_KEY_LEN + 33, lic.model_id.ptr, lic.model_id.len);
	data_len = MODEL_KEY_LEN + 33 + lic.model_id.len;
	memcpy(aad, SEAL_MAGIC, SEAL_MAGIC_LEN);
	memcpy(aad + SEAL_MAGIC_LEN, g.device_id, 16);
	memcpy(aad + SEAL_MAGIC_LEN + 16, g.measurement, 32);
	memcpy(sealed, SEAL_MAGIC, SEAL_MAGIC_LEN);
	TEE_GenerateRandom(sealed + SEAL_MAGIC_LEN, 12);
	res = pta_seal_key("model-key", seal);
	if (!res)
		res = aes_gcm(TEE_MODE_ENCRYPT, seal, sealed + SEAL_MAGIC_LEN, 12, aad, sizeof(aad),
			      data, data_len, sealed + SEAL_MAGIC_LEN + 12,
			      sealed + SEAL_MAGIC_LEN + 12 + data_len);
	if (!res)
		res = put_out(&p[1], sealed, SEAL_MAGIC_LEN + 12 + data_len + TAG_LEN);
out:
	TEE_MemFill(key, 0, sizeof(key));
	TEE_MemFill(seal, 0, sizeof(seal));
	TEE_MemFill(data, 0, sizeof(data));
	TEE_Free(blob);
	return res;
}

/* -- CMD_INITIALIZE ---------------------------------------------------------------------- */

/* The sealed blob: the model key, if this TA on this device sealed it for this license. */
static TEE_Result unseal(const uint8_t *blob, size_t len, const uint8_t *license, size_t license_len,
			 const omg_license *lic, uint8_t key[MODEL_KEY_LEN])
{
	uint8_t data[MODEL_KEY_LEN + 32 + 1 + OMG_MAX_ID_LEN] = { }, seal[32] = { }, digest[32] = { };
	uint8_t aad[SEAL_MAGIC_LEN + 16 + 32] = { };
	size_t data_len = 0;
	struct part lp = { license, license_len };
	TEE_Result res = TEE_SUCCESS;

	if (len < SEAL_MAGIC_LEN + 12 + MODEL_KEY_LEN + 33 + TAG_LEN || len > sizeof(data) + 36 ||
	    memcmp(blob, SEAL_MAGIC, SEAL_MAGIC_LEN))
		return refuse(OMG_RESULT_UNSEAL);
	data_len = len - SEAL_MAGIC_LEN - 12 - TAG_LEN;
	memcpy(aad, SEAL_MAGIC, SEAL_MAGIC_LEN);
	memcpy(aad + SEAL_MAGIC_LEN, g.device_id, 16);
	memcpy(aad + SEAL_MAGIC_LEN + 16, g.measurement, 32);
	res = pta_seal_key("model-key", seal);
	if (!res && aes_gcm(TEE_MODE_DECRYPT, seal, blob + SEAL_MAGIC_LEN, 12, aad, sizeof(aad),
			    blob + SEAL_MAGIC_LEN + 12, data_len, data, (uint8_t *)blob + len - TAG_LEN))
		res = refuse(OMG_RESULT_UNSEAL);
	TEE_MemFill(seal, 0, sizeof(seal));
	if (res)
		goto out;
	res = sha256(&lp, 1, digest);
	if (res)
		goto out;
	if (memcmp(data + MODEL_KEY_LEN, digest, 32) || data[MODEL_KEY_LEN + 32] != lic->model_id.len ||
	    data_len != MODEL_KEY_LEN + 33 + lic->model_id.len ||
	    memcmp(data + MODEL_KEY_LEN + 33, lic->model_id.ptr, lic->model_id.len)) {
		res = refuse(OMG_RESULT_LICENSE_INVALID); /* sealed for another license */
		goto out;
	}
	memcpy(key, data, MODEL_KEY_LEN);
out:
	TEE_MemFill(data, 0, sizeof(data));
	return res;
}

/* The vendor's signature over header and ciphertext, then each segment decrypted. */
static TEE_Result open_package(const uint8_t *pkg, size_t len, const omg_pkg_header *h,
			       const uint8_t key[MODEL_KEY_LEN])
{
	uint8_t prefix_hash[32] = { }, body_hash[32] = { }, check[32] = { }, nonce[12] = { };
	const uint8_t *body = pkg + h->body_offset;
	size_t nseg = 0, pos = 0, body_len = len - h->body_offset;
	struct part pp = { h->signed_prefix.ptr, h->signed_prefix.len };
	struct part bp = { body, body_len };
	struct part sp[] = { { PKG_SIG_CONTEXT, sizeof(PKG_SIG_CONTEXT) - 1 }, { prefix_hash, 32 },
			     { body_hash, 32 } };
	uint8_t msg[sizeof(PKG_SIG_CONTEXT) - 1 + 64] = { };
	struct part mp = { };
	TEE_Result res = TEE_SUCCESS;

	if (!h->seg_size || h->pt_len > OMG_MAX_MESSAGE * 8)
		return refuse(OMG_RESULT_PACKAGE_INTEGRITY);
	nseg = h->pt_len ? (size_t)((h->pt_len + h->seg_size - 1) / h->seg_size) : 1;
	if (body_len != h->pt_len + TAG_LEN * nseg)
		return refuse(OMG_RESULT_PACKAGE_INTEGRITY);
	res = sha256(&pp, 1, prefix_hash);
	if (!res)
		res = sha256(&bp, 1, body_hash);
	if (res)
		return res;
	for (size_t i = 0, off = 0; i < 3; off += sp[i].n, i++)
		memcpy(msg + off, sp[i].p, sp[i].n);
	if (ed25519_verify(vendor_key, msg, sizeof(msg), h->signature.ptr))
		return refuse(OMG_RESULT_PACKAGE_INTEGRITY);
	g.model = TEE_Malloc(h->pt_len ? h->pt_len : 1, 0);
	if (!g.model)
		return fail(OMG_RESULT_OUT_OF_MEMORY, "no heap for a %u-byte model",
			    (unsigned int)h->pt_len);
	g.model_len = h->pt_len;
	/* STREAM: nonce = prefix(7) || u32 segment || u8 last; AAD = H */
	for (size_t i = 0; i < nseg; i++) {
		size_t n = i + 1 < nseg ? h->seg_size : (size_t)(h->pt_len - h->seg_size * (nseg - 1));

		memcpy(nonce, h->nonce_prefix, 7);
		nonce[7] = (uint8_t)(i >> 24);
		nonce[8] = (uint8_t)(i >> 16);
		nonce[9] = (uint8_t)(i >> 8);
		nonce[10] = (uint8_t)i;
		nonce[11] = i + 1 == nseg;
		/* read in place: the tag is checked over exactly what is decrypted */
		if (aes_gcm(TEE_MODE_DECRYPT, key, nonce, 12, prefix_hash, 32, body + pos, n,
			    g.model + i * h->seg_size, (uint8_t *)body + pos + n))
			return refuse(OMG_RESULT_PACKAGE_INTEGRITY);
		pos += n + TAG_LEN;
	}
	mp.p = g.model;
	mp.n = g.model_len;
	res = sha256(&mp, 1, check);
	if (res)
		return res;
	if (memcmp(check, h->pt_sha256, 32))
		return refuse(OMG_RESULT_PACKAGE_INTEGRITY);
	return TEE_SUCCESS;
}

/* The model must run here and fit its frontend and labels: checked before any counter moves. */
static TEE_Result load_model(const omg_pkg_header *h)
{
	omg_plan plan = { };
	char err[160] = { };
	uint32_t n_features = 0;
	TEE_Result res = TEE_SUCCESS;

	if (!bytes_eq(h->runtime, "c", 1))
		return fail(OMG_RESULT_RUNTIME_UNAVAILABLE,
			    "this TEE image runs the C engine only: seal the model for runtime 'c'");
	res = omg_frontend_plan(&h->frontend, &g.fe_plan, err, sizeof(err));
	if (res)
		return fail(OMG_RESULT_MODEL_FORMAT, "the package's frontend settings are not usable: %s", err);
	if (g.fe_plan.clip_samples != OMG_CLIP_SAMPLES)
		return fail(OMG_RESULT_MODEL_FORMAT, "the frontend takes clips of %d samples, not %d",
			    g.fe_plan.clip_samples, OMG_CLIP_SAMPLES);
	res = omg_engine_plan(g.model, g.model_len, &plan, err, sizeof(err));
	if (res)
		return fail(OMG_RESULT_MODEL_FORMAT, "%s", err);
	if (plan.input_rank < 3 || plan.input_dims[1] != g.fe_plan.num_frames ||
	    plan.input_dims[2] != g.fe_plan.num_features ||
	    (plan.input_rank == 4 && plan.input_dims[3] != 1))
		return fail(OMG_RESULT_MODEL_FORMAT,
			    "the model takes features of %d x %d, its frontend settings make %d x %d",
			    plan.input_dims[1], plan.input_dims[2], g.fe_plan.num_frames,
			    g.fe_plan.num_features);
	if (plan.output_size != h->num_labels || h->num_labels > MAX_CLASSES)
		return fail(OMG_RESULT_MODEL_FORMAT, "the model has %u outputs but %u labels are given",
			    plan.output_size, h->num_labels);
	g.arena = TEE_Malloc(plan.arena_bytes + 16, 0);
	g.fe_mem = TEE_Malloc(g.fe_plan.state_bytes + 16, 0);
	n_features = (uint32_t)(g.fe_plan.num_frames * g.fe_plan.num_features);
	g.features = TEE_Malloc(n_features * sizeof(float), 0);
	g.input = TEE_Malloc(n_features, 0);
	if (!g.arena || !g.fe_mem || !g.features || !g.input)
		return fail(OMG_RESULT_OUT_OF_MEMORY, "the model needs %u bytes of arena",
			    (unsigned int)plan.arena_bytes);
	res = omg_engine_init(&g.engine, g.model, g.model_len,
			      (void *)(((uintptr_t)g.arena + 15) & ~(uintptr_t)15), plan.arena_bytes,
			      err, sizeof(err));
	if (!res)
		res = omg_frontend_init(&g.fe, &h->frontend,
					(void *)(((uintptr_t)g.fe_mem + 15) & ~(uintptr_t)15),
					g.fe_plan.state_bytes, err, sizeof(err));
	if (res)
		return fail(OMG_RESULT_MODEL_FORMAT, "%s", err);
	omg_engine_io(g.engine, &g.io);
	if (g.io.input_bytes != n_features || g.io.output_bytes != h->num_labels)
		return fail(OMG_RESULT_MODEL_FORMAT, "the model's tensors do not fit the frontend");
	g.num_labels = h->num_labels;
	return TEE_SUCCESS;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static TEE_Result cmd_initialize(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	uint8_t *sealed = NULL, *license = NULL, *header = NULL, key[MODEL_KEY_LEN] = { };
	uint8_t info[2048] = { };
	size_t sealed_len = 0, license_len = 0, pkg_len = p[2].memref.size, head_len = 0;
	const uint8_t *pkg = p[2].memref.buffer;
	char counter[8 + OMG_MAX_ID_LEN + 1] = "counter:";
	uint64_t seen = 0, left = 0;
	bool found = false;
	omg_license lic = { };
	omg_pkg_header h = { };
	TEE_Time now = { };
	struct omg_cbw w = { .p = info, .max = sizeof(info) };
	TEE_Result res = TEE_SUCCESS;

	if (pt != OMG_SIG_CMD_INITIALIZE)
		return fail(OMG_RESULT_BAD_PARAMETERS, "initialize: wrong parameter types");
	wipe_model();
	res = copy_in(&p[0], MAX_SEALED, &sealed, &sealed_len);
	if (!res)
		res = copy_in(&p[1], MAX_LICENSE, &license, &license_len);
	if (res)
		goto out;
	res = check_license(license, license_len, &lic);
	if (!res)
		res = unseal(sealed, sealed_len, license, license_len, &lic, key);
	if (res)
		goto out;
	TEE_GetREETime(&now);
	if ((int64_t)now.seconds > lic.not_after) {
		res = refuse(OMG_RESULT_LICENSE_EXPIRED);
		goto out;
	}
	/* the header is copied before it is parsed; the segments are read in place
	 * (each is authenticated as it is decrypted) */
	if (!pkg || pkg_len < 14) {
		res = refuse(OMG_RESULT_PACKAGE_INTEGRITY);
		goto out;
	}
	head_len = 14 + ((size_t)pkg[8] << 24 | (size_t)pkg[9] << 16 | (size_t)pkg[10] << 8 | pkg[11]) + 64;
	if (head_len > OMG_MAX_HEADER + 78 || head_len > pkg_len) {
		res = refuse(OMG_RESULT_PACKAGE_INTEGRITY);
		goto out;
	}
	header = TEE_Malloc(head_len, 0);
	if (!header) {
		res = fail(OMG_RESULT_OUT_OF_MEMORY, "no heap for the package header");
		goto out;
	}
	TEE_MemMove(header, pkg, head_len);
	if (omg_package_parse_header(header, head_len, &h) || h.body_offset != head_len) {
		res = refuse(OMG_RESULT_PACKAGE_INTEGRITY);
		goto out;
	}
	if (!bytes_eq(h.model_id, lic.model_id.ptr, lic.model_id.len) ||
	    h.model_version != lic.model_version) {
		res = refuse(OMG_RESULT_LICENSE_INVALID); /* for another model or version */
		goto out;
	}
	if ((int64_t)h.model_version < lic.min_version) {
		res = refuse(OMG_RESULT_ROLLBACK);
		goto out;
	}
	memcpy(counter + 8, h.model_id.ptr, h.model_id.len);
	res = store_get(counter, &seen, &found);
	if (res)
		goto out;
	if (found && h.model_version < seen) {
		res = refuse(OMG_RESULT_ROLLBACK);
		goto out;
	}
	/* the header was verified on the copy; the signature covers the copy */
	res = open_package(pkg, pkg_len, &h, key);
	/* h points into the copy, so the signed prefix checked is the copy's */
	if (!res)
		res = load_model(&h);
	if (res)
		goto out;
	/* only now, with a model that runs, does anything persistent change; the
	 * check above is repeated in the one atomic step (another session may have
	 * advanced the counter since) */
	res = store_update(counter, STORE_ADVANCE, h.model_version, &seen);
	if (res)
		goto out;
	memcpy(g.budget_name, "budget:", 7);
	hex(lic.license_id, 16, g.budget_name + 7);
	g.has_budget = lic.has_budget;
	if (g.has_budget) {
		res = store_update(g.budget_name, STORE_START, lic.budget, &left);
		if (res)
			goto out;
	}
	g.scores_allowed = lic.scores;
	omg_cbw_map(&w, 6);
	omg_cbw_cstr(&w, "model_id");
	omg_cbw_text(&w, (const char *)h.model_id.ptr, h.model_id.len);
	omg_cbw_cstr(&w, "model_version");
	omg_cbw_uint(&w, h.model_version);
	omg_cbw_cstr(&w, "labels");
	omg_cbw_array(&w, h.num_labels);
	for (uint32_t i = 0; i < h.num_labels; i++)
		omg_cbw_text(&w, (const char *)h.labels[i].ptr, h.labels[i].len);
	omg_cbw_cstr(&w, "runtime");
	omg_cbw_text(&w, (const char *)h.runtime.ptr, h.runtime.len);
	omg_cbw_cstr(&w, "scores_allowed");
	omg_cbw_bool(&w, lic.scores);
	omg_cbw_cstr(&w, "budget_left");
	if (g.has_budget)
		omg_cbw_uint(&w, left);
	else
		omg_cbw_null(&w);
	res = w.over ? fail(OMG_RESULT_SHORT_BUFFER, "model info too large") : put_out(&p[3], info, w.n);
	if (!res)
		g.ready = true;
out:
	if (res)
		wipe_model();
	TEE_MemFill(key, 0, sizeof(key));
	TEE_Free(sealed);
	TEE_Free(license);
	TEE_Free(header);
	return res;
}

/* -- CMD_CLASSIFY ----------------------------------------------------------------------- */

static TEE_Result cmd_classify(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	uint32_t source = p[0].value.a, most = p[0].value.b, n = 0;
	size_t need = 0;
	const int16_t *audio = NULL;
	uint64_t left = 0;
	bool found = false;
	int8_t out[MAX_CLASSES] = { };
	struct omg_cbw w = { };
	TEE_Result res = TEE_SUCCESS;

	if (pt == OMG_CLASSIFY_MIC_SIGNATURE && source == OMG_SOURCE_MIC)
		return fail(OMG_RESULT_BAD_PARAMETERS,
			    "this device has no secure microphone (QEMU): hand audio in with SOURCE_BUFFER");
	if (pt != OMG_SIG_CMD_CLASSIFY)
		return fail(OMG_RESULT_BAD_PARAMETERS, "classify: wrong parameter types");
	if (!g.ready)
		return fail(OMG_RESULT_BAD_STATE, "classify needs initialize first");
	if (most < 1 || most > OMG_MAX_BATCH)
		return fail(OMG_RESULT_BAD_PARAMETERS, "max clips must be 1..%d", OMG_MAX_BATCH);
	if (source != OMG_SOURCE_BUFFER)
		return fail(OMG_RESULT_BAD_PARAMETERS, "unknown audio source");
	need = OMG_CLASSIFY_REPLY_MAX(most, g.num_labels, g.scores_allowed);
	if (p[2].memref.size < need) { /* before any audio is read or budget spent */
		p[2].memref.size = need;
		return fail(OMG_RESULT_SHORT_BUFFER, "the results of %u clips need %u bytes of output",
			    (unsigned int)most, (unsigned int)need);
	}
	if (!p[1].memref.buffer || p[1].memref.size % OMG_CLIP_BYTES)
		return fail(OMG_RESULT_BAD_PARAMETERS, "audio buffer must hold whole clips of %d bytes",
			    OMG_CLIP_BYTES);
	n = (uint32_t)(p[1].memref.size / OMG_CLIP_BYTES);
	if (n > most)
		n = most;
	if (g.has_budget && n) {
		res = store_get(g.budget_name, &left, &found);
		if (res)
			return res;
		if (left < n)
			return refuse(OMG_RESULT_BUDGET_EXHAUSTED);
	}
	w.p = p[2].memref.buffer;
	w.max = p[2].memref.size;
	omg_cbw_map(&w, g.scores_allowed ? 2 : 1);
	/* with scores, the scores array is written as the clips go and the labels,
	 * kept aside, after it (a map's order does not matter) */
	omg_cbw_cstr(&w, g.scores_allowed ? "scores" : "labels");
	omg_cbw_array(&w, n);
	audio = p[1].memref.buffer; /* read in place, clip by clip: nothing is checked on it */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t best = 0;

		res = omg_frontend_run(g.fe, audio + (size_t)i * OMG_CLIP_SAMPLES, g.features);
		if (res)
			return fail(res, "the frontend failed");
		omg_quantize(g.features, g.io.input_bytes, g.io.input_scale, g.io.input_zero_point,
			     g.input);
		res = omg_engine_invoke(g.engine, g.input, out);
		if (res)
			return fail(res, "the engine failed");
		for (uint32_t k = 1; k < g.num_labels; k++)
			if (out[k] > out[best]) /* the first maximum, as numpy's argmax */
				best = k;
		if (!g.scores_allowed) {
			omg_cbw_uint(&w, best);
			continue;
		}
		labels[i] = (uint16_t)best;
		omg_cbw_array(&w, g.num_labels);
		for (uint32_t k = 0; k < g.num_labels; k++)
			omg_cbw_float(&w, ((float)out[k] - (float)g.io.output_zero_point) *
					      g.io.output_scale);
	}
	if (g.scores_allowed) {
		omg_cbw_cstr(&w, "labels");
		omg_cbw_array(&w, n);
		for (uint32_t i = 0; i < n; i++)
			omg_cbw_uint(&w, labels[i]);
	}
	if (w.over) {
		/* cannot happen (the bound was checked above); fail closed all the same */
		p[2].memref.size = OMG_CLASSIFY_REPLY_MAX(n, g.num_labels, g.scores_allowed);
		return fail(OMG_RESULT_SHORT_BUFFER, "the results do not fit the output buffer");
	}
	if (g.has_budget && n) {
		/* spent once the clips are classified, atomically (other sessions may have
		 * spent since the check above); no results unless spent */
		res = store_update(g.budget_name, STORE_SPEND, n, &left);
		if (res)
			return res;
	}
	p[2].memref.size = w.n;
	return TEE_SUCCESS;
}

/* -- CMD_CLOSE, CMD_LAST_ERROR ------------------------------------------------------------- */

static TEE_Result cmd_close(uint32_t pt)
{
	if (pt != OMG_SIG_CMD_CLOSE)
		return fail(OMG_RESULT_BAD_PARAMETERS, "close: wrong parameter types");
	wipe_model();
	if (g.kt != TEE_HANDLE_NULL)
		TEE_FreeTransientObject(g.kt);
	g.kt = TEE_HANDLE_NULL;
	return TEE_SUCCESS;
}

static TEE_Result cmd_last_error(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	size_t n = strlen(g.last_error);

	if (pt != OMG_SIG_CMD_LAST_ERROR)
		return TEE_ERROR_BAD_PARAMETERS;
	if (p[0].memref.size < n) {
		p[0].memref.size = n;
		return TEE_ERROR_SHORT_BUFFER;
	}
	TEE_MemMove(p[0].memref.buffer, g.last_error, n);
	p[0].memref.size = n;
	return TEE_SUCCESS;
}

/* -- entry points ------------------------------------------------------------------------- */

TEE_Result TA_CreateEntryPoint(void)
{
	return TEE_SUCCESS;
}

void TA_DestroyEntryPoint(void)
{
}

TEE_Result TA_OpenSessionEntryPoint(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS], void **session)
{
	TEE_Param q[TEE_NUM_PARAMS] = { };
	uint8_t pub[32] = { };
	char version[64] = { };
	uint32_t origin = 0;
	TEE_Result res = TEE_SUCCESS;

	(void)pt;
	(void)p;
	*session = NULL;
	memset(&g, 0, sizeof(g));
	res = TEE_OpenTASession(&pta_uuid, TEE_TIMEOUT_INFINITE, 0, NULL, &g.pta, &origin);
	if (res)
		return res;
	q[0].memref.buffer = g.measurement;
	q[0].memref.size = sizeof(g.measurement);
	res = pta_call(OMG_PTA_CMD_MEASUREMENT,
		       TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_NONE,
				       TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE), q);
	if (res)
		return res;
	memset(q, 0, sizeof(q));
	q[0].memref.buffer = pub;
	q[0].memref.size = sizeof(pub);
	q[1].memref.buffer = g.device_id;
	q[1].memref.size = sizeof(g.device_id);
	q[2].memref.buffer = version;
	q[2].memref.size = sizeof(version);
	return pta_call(OMG_PTA_CMD_DEVICE_INFO,
			TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_MEMREF_OUTPUT,
					TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_NONE), q);
}

void TA_CloseSessionEntryPoint(void *session)
{
	(void)session;
	cmd_close(OMG_SIG_CMD_CLOSE);
	TEE_CloseTASession(g.pta);
}

TEE_Result TA_InvokeCommandEntryPoint(void *session, uint32_t cmd, uint32_t pt,
				      TEE_Param p[TEE_NUM_PARAMS])
{
	TEE_Result res = TEE_SUCCESS;

	(void)session;
	if (cmd != OMG_CMD_LAST_ERROR)
		g.last_error[0] = '\0';
	switch (cmd) {
	case OMG_CMD_GET_ATTESTATION:
		res = cmd_get_attestation(pt, p);
		break;
	case OMG_CMD_PROVISION:
		res = cmd_provision(pt, p);
		break;
	case OMG_CMD_INITIALIZE:
		res = cmd_initialize(pt, p);
		break;
	case OMG_CMD_CLASSIFY:
		res = cmd_classify(pt, p);
		break;
	case OMG_CMD_CLOSE:
		res = cmd_close(pt);
		break;
	case OMG_CMD_LAST_ERROR:
		return cmd_last_error(pt, p);
	default:
		res = fail(OMG_RESULT_BAD_PARAMETERS, "unknown command %u", cmd);
	}
	return res;
}
