// SPDX-License-Identifier: BSD-2-Clause
/*
 * huk_probe derive | store TEXT | load: the normal world's side of the HUK
 * probe TA, through Debian's libteec. Prints hex (derive) or the text kept
 * (load); on a TEE error prints "huk_probe: ... 0xRESULT" and exits 1.
 */

#include <stdio.h>
#include <string.h>
#include <tee_client_api.h>

#include "../huk_probe.h"

static int fail(const char *what, TEEC_Result res, uint32_t origin)
{
	fprintf(stderr, "huk_probe: %s: 0x%08x (origin %u)\n", what,
		(unsigned int)res, (unsigned int)origin);
	return 1;
}

int main(int argc, char **argv)
{
	TEEC_UUID uuid = HUK_PROBE_UUID;
	TEEC_Context ctx;
	TEEC_Session sess;
	TEEC_Operation op;
	TEEC_Result res;
	uint32_t origin = 0;
	unsigned char buf[256];
	size_t i;
	int rc = 0;

	if (argc < 2 || (!strcmp(argv[1], "store") && argc < 3)) {
		fprintf(stderr, "usage: huk_probe derive | store TEXT | load\n");
		return 2;
	}
	res = TEEC_InitializeContext(NULL, &ctx);
	if (res != TEEC_SUCCESS)
		return fail("TEEC_InitializeContext", res, 0);
	res = TEEC_OpenSession(&ctx, &sess, &uuid, TEEC_LOGIN_PUBLIC, NULL,
			       NULL, &origin);
	if (res != TEEC_SUCCESS) {
		TEEC_FinalizeContext(&ctx);
		return fail("TEEC_OpenSession", res, origin);
	}
	memset(&op, 0, sizeof(op));
	memset(buf, 0, sizeof(buf));
	if (!strcmp(argv[1], "derive")) {
		op.paramTypes = TEEC_PARAM_TYPES(TEEC_MEMREF_TEMP_OUTPUT,
						 TEEC_NONE, TEEC_NONE, TEEC_NONE);
		op.params[0].tmpref.buffer = buf;
		op.params[0].tmpref.size = 32;
		res = TEEC_InvokeCommand(&sess, HUK_PROBE_CMD_DERIVE, &op,
					 &origin);
		if (res == TEEC_SUCCESS) {
			for (i = 0; i < op.params[0].tmpref.size; i++)
				printf("%02x", buf[i]);
			printf("\n");
		}
	} else if (!strcmp(argv[1], "store")) {
		op.paramTypes = TEEC_PARAM_TYPES(TEEC_MEMREF_TEMP_INPUT,
						 TEEC_NONE, TEEC_NONE, TEEC_NONE);
		op.params[0].tmpref.buffer = argv[2];
		op.params[0].tmpref.size = strlen(argv[2]);
		res = TEEC_InvokeCommand(&sess, HUK_PROBE_CMD_STORE, &op,
					 &origin);
	} else if (!strcmp(argv[1], "load")) {
		op.paramTypes = TEEC_PARAM_TYPES(TEEC_MEMREF_TEMP_OUTPUT,
						 TEEC_NONE, TEEC_NONE, TEEC_NONE);
		op.params[0].tmpref.buffer = buf;
		op.params[0].tmpref.size = sizeof(buf) - 1;
		res = TEEC_InvokeCommand(&sess, HUK_PROBE_CMD_LOAD, &op,
					 &origin);
		if (res == TEEC_SUCCESS)
			printf("%s\n", buf);
	} else {
		fprintf(stderr, "huk_probe: unknown command %s\n", argv[1]);
		rc = 2;
	}
	if (!rc && res != TEEC_SUCCESS)
		rc = fail(argv[1], res, origin);
	TEEC_CloseSession(&sess);
	TEEC_FinalizeContext(&ctx);
	return rc;
}
