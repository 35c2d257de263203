// SPDX-License-Identifier: BSD-2-Clause
/*
 * The HUK probe TA: a board's hardware unique key at work, never revealed.
 *
 * DERIVE returns SHA-256 of the key OP-TEE's system PTA derives for this TA
 * from the HUK (PTA_SYSTEM_DERIVE_TA_UNIQUE_KEY): equal across reboots of a
 * board, different between boards. STORE and LOAD keep bytes in OP-TEE's
 * secure storage (REE FS, keys derived from the HUK): another board's
 * storage files do not open.
 */

#include <pta_system.h>
#include <string.h>
#include <tee_internal_api.h>

#include "huk_probe.h"

static const char probe_object[] = "probe";
static const char derive_context[] = "omgkit huk probe";

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

static TEE_Result derive(uint32_t pt, TEE_Param params[TEE_NUM_PARAMS])
{
	static const TEE_UUID system_uuid = PTA_SYSTEM_UUID;
	TEE_TASessionHandle sess = TEE_HANDLE_NULL;
	TEE_OperationHandle op = TEE_HANDLE_NULL;
	TEE_Param p[TEE_NUM_PARAMS] = { };
	uint8_t key[32] = { };
	uint32_t origin = 0;
	size_t len = 0;
	TEE_Result res = TEE_ERROR_GENERIC;

	if (pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_OUTPUT,
				  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE,
				  TEE_PARAM_TYPE_NONE) ||
	    params[0].memref.size < 32)
		return TEE_ERROR_BAD_PARAMETERS;
	res = TEE_OpenTASession(&system_uuid, TEE_TIMEOUT_INFINITE, 0, NULL,
				&sess, &origin);
	if (res)
		return res;
	p[0].memref.buffer = (void *)derive_context;
	p[0].memref.size = sizeof(derive_context);
	p[1].memref.buffer = key;
	p[1].memref.size = sizeof(key);
	res = TEE_InvokeTACommand(sess, TEE_TIMEOUT_INFINITE,
				  PTA_SYSTEM_DERIVE_TA_UNIQUE_KEY,
				  TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT,
						  TEE_PARAM_TYPE_MEMREF_OUTPUT,
						  TEE_PARAM_TYPE_NONE,
						  TEE_PARAM_TYPE_NONE),
				  p, &origin);
	TEE_CloseTASession(sess);
	if (res)
		return res;
	res = TEE_AllocateOperation(&op, TEE_ALG_SHA256, TEE_MODE_DIGEST, 0);
	if (res)
		goto out;
	len = params[0].memref.size;
	res = TEE_DigestDoFinal(op, key, sizeof(key), params[0].memref.buffer,
				&len);
	params[0].memref.size = len;
	TEE_FreeOperation(op);
out:
	TEE_MemFill(key, 0, sizeof(key));
	return res;
}

static TEE_Result store(uint32_t pt, TEE_Param params[TEE_NUM_PARAMS])
{
	TEE_ObjectHandle obj = TEE_HANDLE_NULL;
	TEE_Result res = TEE_ERROR_GENERIC;

	if (pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT,
				  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE,
				  TEE_PARAM_TYPE_NONE))
		return TEE_ERROR_BAD_PARAMETERS;
	res = TEE_CreatePersistentObject(TEE_STORAGE_PRIVATE, probe_object,
					 sizeof(probe_object) - 1,
					 TEE_DATA_FLAG_ACCESS_WRITE |
					 TEE_DATA_FLAG_OVERWRITE,
					 TEE_HANDLE_NULL,
					 params[0].memref.buffer,
					 params[0].memref.size, &obj);
	if (!res)
		TEE_CloseObject(obj);
	return res;
}

static TEE_Result load(uint32_t pt, TEE_Param params[TEE_NUM_PARAMS])
{
	TEE_ObjectHandle obj = TEE_HANDLE_NULL;
	TEE_Result res = TEE_ERROR_GENERIC;
	size_t n = 0;

	if (pt != TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_OUTPUT,
				  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE,
				  TEE_PARAM_TYPE_NONE))
		return TEE_ERROR_BAD_PARAMETERS;
	res = TEE_OpenPersistentObject(TEE_STORAGE_PRIVATE, probe_object,
				       sizeof(probe_object) - 1,
				       TEE_DATA_FLAG_ACCESS_READ, &obj);
	if (res)
		return res;
	res = TEE_ReadObjectData(obj, params[0].memref.buffer,
				 params[0].memref.size, &n);
	params[0].memref.size = n;
	TEE_CloseObject(obj);
	return res;
}

TEE_Result TA_InvokeCommandEntryPoint(void *session __unused, uint32_t cmd,
				      uint32_t pt,
				      TEE_Param params[TEE_NUM_PARAMS])
{
	switch (cmd) {
	case HUK_PROBE_CMD_DERIVE:
		return derive(pt, params);
	case HUK_PROBE_CMD_STORE:
		return store(pt, params);
	case HUK_PROBE_CMD_LOAD:
		return load(pt, params);
	default:
		return TEE_ERROR_NOT_SUPPORTED;
	}
}
