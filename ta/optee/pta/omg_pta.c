// SPDX-License-Identifier: BSD-2-Clause
/*
 * omg_pta.c - the OMG pseudo-TA: measurement, sealing key and attestation
 * for the keyword TA, inside the OP-TEE core (include/omg_pta.h says what
 * each command does and why).
 *
 * The measurement is the digest of the TA's ELF image that the core
 * verified against the TA's signed header when it loaded the calling TA
 * instance, recorded in its user_mode_ctx by our core patch. Keys come from
 * the hardware unique key through huk_subkey_derive() under a usage of our
 * own, HUK_SUBKEY_OMG (our second core patch): under HUK_SUBKEY_UNIQUE_TA,
 * the system pseudo-TA's, a TA that chooses its UUID and extra data would
 * choose the whole input and could derive our keys. The device's Ed25519
 * key is derived the same way and used here only.
 */

#include <crypto/crypto.h>
#include <kernel/huk_subkey.h>
#include <kernel/linker.h>
#include <kernel/pseudo_ta.h>
#include <kernel/tee_time.h>
#include <kernel/ts_manager.h>
#include <kernel/user_access.h>
#include <kernel/user_mode_ctx.h>
#include <string.h>
#include <string_ext.h>
#include <tee_api_defines.h>
#include <util.h>

#include "omg_cbor_write.h"
#include "omg_pta.h"

#define PTA_NAME "omg.pta"

/* libtomcrypt, in the core: the Ed25519 public key of a 32-byte private seed
 * (its header cannot be included outside libtomcrypt's own build) */
int tweetnacl_crypto_sk_to_pk(unsigned char *pk, const unsigned char *sk);

#ifndef OMG_PLATFORM_NAME
#define OMG_PLATFORM_NAME "unknown platform"
#endif

static const char seal_context[] = "OMG-SEAL-v1";
static const char device_key_context[] = "OMG-DEVICE-KEY-v1";
static const char eat_profile[] = "tag:omgkit.dev,2026:omg-eat-v1";

#define MAX_TOKEN 512
#define MAX_CLAIMS 384
#define TEE_VERSION_MAX 64

/* -- parameters: a user TA's memrefs are user addresses, a client's are not */

static bool from_ta(void)
{
	struct ts_session *s = ts_get_calling_session();

	return s && is_user_mode_ctx(s->ctx);
}

static TEE_Result param_in(void *dst, const TEE_Param *p, size_t len)
{
	if (p->memref.size != len || !p->memref.buffer)
		return TEE_ERROR_BAD_PARAMETERS;
	if (from_ta())
		return copy_from_user(dst, p->memref.buffer, len);
	memcpy(dst, p->memref.buffer, len);
	return TEE_SUCCESS;
}

static TEE_Result param_out(TEE_Param *p, const void *src, size_t len)
{
	TEE_Result res = TEE_SUCCESS;

	if (p->memref.size < len) {
		p->memref.size = len;
		return TEE_ERROR_SHORT_BUFFER;
	}
	if (from_ta())
		res = copy_to_user(p->memref.buffer, src, len);
	else
		memcpy(p->memref.buffer, src, len);
	if (!res)
		p->memref.size = len;
	return res;
}

/* The calling TA's context, or NULL when the caller is not a user TA. */
static struct user_mode_ctx *caller(void)
{
	struct ts_session *s = ts_get_calling_session();

	if (!s || !is_user_mode_ctx(s->ctx))
		return NULL;
	return to_user_mode_ctx(s->ctx);
}

static TEE_Result measurement(uint8_t m[OMG_PTA_MEASUREMENT_LEN], TEE_UUID *uuid)
{
	struct user_mode_ctx *u = caller();

	if (!u)
		return TEE_ERROR_ACCESS_DENIED;
	if (!u->omg_ta_tag_valid)
		return TEE_ERROR_SECURITY; /* loaded by a path that recorded no digest */
	memcpy(m, u->omg_ta_tag, OMG_PTA_MEASUREMENT_LEN);
	if (uuid)
		*uuid = u->ts_ctx->uuid;
	return TEE_SUCCESS;
}

/* -- keys -------------------------------------------------------------------- */

static TEE_Result device_key(uint8_t priv[32], uint8_t pub[32])
{
	TEE_Result res = huk_subkey_derive(HUK_SUBKEY_OMG, device_key_context,
					   sizeof(device_key_context) - 1, priv, 32);

	if (res)
		return res;
	if (tweetnacl_crypto_sk_to_pk(pub, priv))
		return TEE_ERROR_GENERIC;
	return TEE_SUCCESS;
}

static TEE_Result device_id(const uint8_t pub[32], uint8_t id[OMG_PTA_DEVICE_ID_LEN])
{
	uint8_t digest[TEE_SHA256_HASH_SIZE] = { };
	void *ctx = NULL;
	TEE_Result res = crypto_hash_alloc_ctx(&ctx, TEE_ALG_SHA256);

	if (res)
		return res;
	res = crypto_hash_init(ctx);
	if (!res)
		res = crypto_hash_update(ctx, pub, 32);
	if (!res)
		res = crypto_hash_final(ctx, digest, sizeof(digest));
	crypto_hash_free_ctx(ctx);
	if (!res)
		memcpy(id, digest, OMG_PTA_DEVICE_ID_LEN);
	return res;
}

/* "OP-TEE 4.10.0 (QEMU)": the version is the first word of core_v_str */
static size_t tee_version(char *out, size_t max)
{
	static const char prefix[] = "OP-TEE ";
	static const char platform[] = " (" OMG_PLATFORM_NAME ")";
	size_t n = sizeof(prefix) - 1, i = 0;

	memcpy(out, prefix, n);
	while (core_v_str[i] && core_v_str[i] != ' ' && n + sizeof(platform) < max)
		out[n++] = core_v_str[i++];
	memcpy(out + n, platform, sizeof(platform) - 1);
	return n + sizeof(platform) - 1;
}

/*
 * The claims (docs/formats.md, "Attestation token"), keys in canonical
 * order: 6 iat, 10 nonce, 256 ueid, 265 profile, -75000 measurement,
 * -75001 TA keys, -75002 TEE version, -75003 TA UUID.
 */
static void claims(struct omg_cbw *b, const uint8_t *nonce, size_t nonce_len,
		   const uint8_t id[16], int64_t iat, const uint8_t m[32],
		   const uint8_t x25519[32], const char *version, size_t version_len,
		   const TEE_UUID *uuid)
{
	uint8_t ueid[17] = { 0x01 };	/* RAND type */
	uint8_t u[16] = { };

	memcpy(ueid + 1, id, 16);
	u[0] = (uint8_t)(uuid->timeLow >> 24);
	u[1] = (uint8_t)(uuid->timeLow >> 16);
	u[2] = (uint8_t)(uuid->timeLow >> 8);
	u[3] = (uint8_t)uuid->timeLow;
	u[4] = (uint8_t)(uuid->timeMid >> 8);
	u[5] = (uint8_t)uuid->timeMid;
	u[6] = (uint8_t)(uuid->timeHiAndVersion >> 8);
	u[7] = (uint8_t)uuid->timeHiAndVersion;
	memcpy(u + 8, uuid->clockSeqAndNode, 8);

	omg_cbw_map(b, 8);
	omg_cbw_uint(b, 6);
	omg_cbw_int(b, iat);
	omg_cbw_uint(b, 10);
	omg_cbw_bytes(b, nonce, nonce_len);
	omg_cbw_uint(b, 256);
	omg_cbw_bytes(b, ueid, sizeof(ueid));
	omg_cbw_uint(b, 265);
	omg_cbw_text(b, eat_profile, sizeof(eat_profile) - 1);
	omg_cbw_int(b, -75000);
	omg_cbw_bytes(b, m, 32);
	omg_cbw_int(b, -75001);
	omg_cbw_map(b, 1);
	omg_cbw_text(b, "X25519", 6);
	omg_cbw_bytes(b, x25519, 32);
	omg_cbw_int(b, -75002);
	omg_cbw_text(b, version, version_len);
	omg_cbw_int(b, -75003);
	omg_cbw_bytes(b, u, sizeof(u));
}

/* protected header {1: -8} (EdDSA), as a bstr's content */
static const uint8_t protected_eddsa[] = { 0xa1, 0x01, 0x27 };

static TEE_Result sign_claims(const uint8_t *payload, size_t payload_len,
			      uint8_t *token, size_t *token_len)
{
	uint8_t tbs[MAX_CLAIMS + 32] = { };
	uint8_t priv[32] = { }, pub[32] = { }, sig[64] = { };
	size_t sig_len = sizeof(sig);
	struct ed25519_keypair kp = { .priv = priv, .pub = pub };
	struct omg_cbw s = { .p = tbs, .max = sizeof(tbs) };
	struct omg_cbw t = { .p = token, .max = *token_len };
	TEE_Result res = TEE_SUCCESS;

	/* Sig_structure = ["Signature1", protected, external_aad = h'', payload] */
	omg_cbw_array(&s, 4);
	omg_cbw_text(&s, "Signature1", 10);
	omg_cbw_bytes(&s, protected_eddsa, sizeof(protected_eddsa));
	omg_cbw_bytes(&s, NULL, 0);
	omg_cbw_bytes(&s, payload, payload_len);
	if (s.over)
		return TEE_ERROR_SHORT_BUFFER;
	res = device_key(priv, pub);
	if (!res)
		res = crypto_acipher_ed25519_sign(&kp, tbs, s.n, sig, &sig_len);
	memzero_explicit(priv, sizeof(priv));
	if (res)
		return res;
	/* tag 18 [protected, {}, payload, signature] */
	omg_cbw_tag(&t, 18);
	omg_cbw_array(&t, 4);
	omg_cbw_bytes(&t, protected_eddsa, sizeof(protected_eddsa));
	omg_cbw_map(&t, 0);
	omg_cbw_bytes(&t, payload, payload_len);
	omg_cbw_bytes(&t, sig, sig_len);
	if (t.over)
		return TEE_ERROR_SHORT_BUFFER;
	*token_len = t.n;
	return TEE_SUCCESS;
}

/* -- commands -------------------------------------------------------------------- */

static TEE_Result cmd_measurement(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	uint8_t m[OMG_PTA_MEASUREMENT_LEN] = { };
	TEE_Result res = TEE_SUCCESS;

	if (pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_NONE,
				  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE))
		return TEE_ERROR_BAD_PARAMETERS;
	res = measurement(m, NULL);
	if (res)
		return res;
	return param_out(&p[0], m, sizeof(m));
}

static TEE_Result cmd_seal_key(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	uint8_t data[sizeof(seal_context) - 1 + OMG_PTA_MEASUREMENT_LEN + OMG_PTA_MAX_LABEL] = { };
	uint8_t key[OMG_PTA_KEY_LEN] = { };
	size_t n = sizeof(seal_context) - 1, label_len = 0;
	TEE_Result res = TEE_SUCCESS;

	if (pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_MEMREF_OUTPUT,
				  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE))
		return TEE_ERROR_BAD_PARAMETERS;
	label_len = p[0].memref.size;
	if (label_len > OMG_PTA_MAX_LABEL)
		return TEE_ERROR_BAD_PARAMETERS;
	memcpy(data, seal_context, n);
	res = measurement(data + n, NULL);
	if (res)
		return res;
	n += OMG_PTA_MEASUREMENT_LEN;
	if (label_len) {
		res = param_in(data + n, &p[0], label_len);
		if (res)
			return res;
		n += label_len;
	}
	res = huk_subkey_derive(HUK_SUBKEY_OMG, data, n, key, sizeof(key));
	if (!res)
		res = param_out(&p[1], key, sizeof(key));
	memzero_explicit(key, sizeof(key));
	return res;
}

static TEE_Result cmd_device_info(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	uint8_t priv[32] = { }, pub[32] = { }, id[OMG_PTA_DEVICE_ID_LEN] = { };
	char version[TEE_VERSION_MAX] = { };
	size_t version_len = 0;
	TEE_Result res = TEE_SUCCESS;

	if (pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_MEMREF_OUTPUT,
				  TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_NONE))
		return TEE_ERROR_BAD_PARAMETERS;
	res = device_key(priv, pub);
	memzero_explicit(priv, sizeof(priv));
	if (!res)
		res = device_id(pub, id);
	if (res)
		return res;
	version_len = tee_version(version, sizeof(version));
	res = param_out(&p[0], pub, sizeof(pub));
	if (!res)
		res = param_out(&p[1], id, sizeof(id));
	if (!res)
		res = param_out(&p[2], version, version_len);
	return res;
}

static TEE_Result cmd_sign_claims(uint32_t pt, TEE_Param p[TEE_NUM_PARAMS])
{
	uint8_t nonce[64] = { }, x25519[32] = { }, m[32] = { };
	uint8_t priv[32] = { }, pub[32] = { }, id[16] = { };
	uint8_t payload[MAX_CLAIMS] = { }, token[MAX_TOKEN] = { };
	char version[TEE_VERSION_MAX] = { };
	struct omg_cbw b = { .p = payload, .max = sizeof(payload) };
	size_t nonce_len = 0, token_len = sizeof(token), version_len = 0;
	TEE_UUID uuid = { };
	TEE_Time now = { };
	TEE_Result res = TEE_SUCCESS;

	if (pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_MEMREF_INPUT,
				  TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_NONE))
		return TEE_ERROR_BAD_PARAMETERS;
	nonce_len = p[0].memref.size;
	if (nonce_len < 16 || nonce_len > sizeof(nonce))
		return TEE_ERROR_BAD_PARAMETERS;
	res = measurement(m, &uuid);
	if (!res)
		res = param_in(nonce, &p[0], nonce_len);
	if (!res)
		res = param_in(x25519, &p[1], sizeof(x25519));
	if (!res)
		res = device_key(priv, pub);
	memzero_explicit(priv, sizeof(priv));
	if (!res)
		res = device_id(pub, id);
	if (!res)
		res = tee_time_get_ree_time(&now);
	if (res)
		return res;
	version_len = tee_version(version, sizeof(version));
	claims(&b, nonce, nonce_len, id, (int64_t)now.seconds, m, x25519, version, version_len,
	       &uuid);
	if (b.over)
		return TEE_ERROR_SHORT_BUFFER;
	res = sign_claims(payload, b.n, token, &token_len);
	if (res)
		return res;
	return param_out(&p[2], token, token_len);
}

static TEE_Result invoke_command(void *session __unused, uint32_t cmd, uint32_t pt,
				 TEE_Param p[TEE_NUM_PARAMS])
{
	switch (cmd) {
	case OMG_PTA_CMD_MEASUREMENT:
		return cmd_measurement(pt, p);
	case OMG_PTA_CMD_SEAL_KEY:
		return cmd_seal_key(pt, p);
	case OMG_PTA_CMD_DEVICE_INFO:
		return cmd_device_info(pt, p);
	case OMG_PTA_CMD_SIGN_CLAIMS:
		return cmd_sign_claims(pt, p);
	default:
		return TEE_ERROR_NOT_IMPLEMENTED;
	}
}

pseudo_ta_register(.uuid = OMG_PTA_UUID, .name = PTA_NAME,
		   .flags = PTA_DEFAULT_FLAGS,
		   .invoke_command_entry_point = invoke_command);
