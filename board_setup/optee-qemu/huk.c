// SPDX-License-Identifier: BSD-2-Clause
/*
 * omgkit: a hardware unique key per board, for platforms without one (QEMU).
 *
 * The board key is a 32-byte array in the core's data, initialized with a
 * marker that every `omg board up` finds in a copy of tee-pager_v2.bin and
 * replaces with the board's 32 random bytes (drawn by `omg board create`)
 * before it repacks the board's FIP; OP-TEE's HUK is its
 * first HW_UNIQUE_KEY_LENGTH (16) bytes. A build whose marker was never
 * replaced gives no key, so no board runs on the marker.
 *
 * On real hardware the key comes from fuses; here it is as secret as the
 * board's flash.bin on the host (see board_setup/optee-qemu/README.md).
 */

#include <assert.h>
#include <kernel/tee_common_otp.h>
#include <string.h>
#include <string_ext.h>
#include <trace.h>

#define OMG_BOARD_KEY_LEN 32

static_assert(HW_UNIQUE_KEY_LENGTH <= OMG_BOARD_KEY_LEN, "HUK longer than the board key");

/* not static, not const: the compiler must read it at run time */
uint8_t omg_board_key[OMG_BOARD_KEY_LEN] __aligned(8) = {
	'o', 'm', 'g', 'k', 'i', 't', ':', 'h', 'u', 'k', '-', 'm', 'a', 'r', 'k', 'e',
	'r', ':', '5', 'b', '1', 'c', '7', 'e', '0', 'a', '9', '3', 'd', '2', '4', 'f',
};

/* the marker's first 18 bytes only, so that the whole marker occurs once in the image */
static const char omg_marker_prefix[18] = "omgkit:huk-marker:";

TEE_Result tee_otp_get_hw_unique_key(struct tee_hw_unique_key *hwkey)
{
	volatile const uint8_t *src = omg_board_key;
	uint8_t key[OMG_BOARD_KEY_LEN] = { 0 };
	size_t n = 0;

	for (n = 0; n < OMG_BOARD_KEY_LEN; n++)
		key[n] = src[n];
	if (!memcmp(key, omg_marker_prefix, sizeof(omg_marker_prefix))) {
		EMSG("omgkit: this firmware has no board key (HUK marker not replaced)");
		memset(hwkey->data, 0, sizeof(hwkey->data));
		return TEE_ERROR_SECURITY;
	}
	memcpy(hwkey->data, key, HW_UNIQUE_KEY_LENGTH);
	memzero_explicit(key, sizeof(key));
	return TEE_SUCCESS;
}
