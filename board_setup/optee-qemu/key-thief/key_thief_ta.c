// SPDX-License-Identifier: BSD-2-Clause
/*
 * The key-thief TA: what a TA re-signed with a leaked TA signing key can do
 * with OP-TEE's system pseudo-TA. PTA_SYSTEM_DERIVE_TA_UNIQUE_KEY derives
 * HMAC(HUK, usage || the caller's UUID || extra data): the caller chooses
 * both. With a UUID that spells the start of another derivation's input,
 * it would get that derivation's key, and return it to the normal world.
 *
 * Command 0: [in] memref 0 extra data, [out] memref 1 the derived key
 * (16 to 32 bytes, the memref's size).
 */

#include <pta_system.h>
#include <tee_internal_api.h>

TEE_Result TA_CreateEntryPoint(void)
{
	return TEE_SUCCESS;
}

void TA_DestroyEntryPoint(void)
{
}

TEE_Result TA_OpenSessionEntryPoint(uint32_t pt __unused,
				    TEE_Param params[TEE_NUM_PARAMS] __unused,
				    void **session __unused)
{
	return TEE_SUCCESS;
}

void TA_CloseSessionEntryPoint(void *session __unused)
{
}

TEE_Result TA_InvokeCommandEntryPoint(void *session __unused, uint32_t cmd,
				      uint32_t pt, TEE_Param params[TEE_NUM_PARAMS])
{
	static const TEE_UUID system_uuid = PTA_SYSTEM_UUID;
	TEE_TASessionHandle sess = TEE_HANDLE_NULL;
	TEE_Param p[TEE_NUM_PARAMS] = { };
	uint8_t extra[256] = { }, key[32] = { };
	uint32_t origin = 0;
	TEE_Result res = TEE_SUCCESS;

	if (cmd != 0 ||
	    pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_MEMREF_OUTPUT,
				  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE) ||
	    params[0].memref.size > sizeof(extra) || params[1].memref.size < 16 ||
	    params[1].memref.size > sizeof(key))
		return TEE_ERROR_BAD_PARAMETERS;
	TEE_MemMove(extra, params[0].memref.buffer, params[0].memref.size);
	res = TEE_OpenTASession(&system_uuid, TEE_TIMEOUT_INFINITE, 0, NULL, &sess, &origin);
	if (res)
		return res;
	p[0].memref.buffer = extra;
	p[0].memref.size = params[0].memref.size;
	p[1].memref.buffer = key;
	p[1].memref.size = params[1].memref.size;
	res = TEE_InvokeTACommand(sess, TEE_TIMEOUT_INFINITE, PTA_SYSTEM_DERIVE_TA_UNIQUE_KEY,
				  pt, p, &origin);
	TEE_CloseTASession(sess);
	if (!res)
		TEE_MemMove(params[1].memref.buffer, key, params[1].memref.size);
	return res;
}
