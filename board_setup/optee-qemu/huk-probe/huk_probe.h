/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The HUK probe: a tiny TA that shows a board's hardware unique key at work
 * without revealing it (tests/test_optee_board.py; README.md beside it).
 */
#ifndef HUK_PROBE_H
#define HUK_PROBE_H

#define HUK_PROBE_UUID                                                         \
	{ 0x77532e52, 0x456a, 0x43f7,                                          \
	  { 0xad, 0xd2, 0x28, 0xe3, 0xb5, 0x33, 0x79, 0xde } }

/* [out] memref 0: SHA-256 of the key the system PTA derives for this TA (32 bytes) */
#define HUK_PROBE_CMD_DERIVE 0
/* [in] memref 0: bytes to keep in secure storage (object "probe", overwritten) */
#define HUK_PROBE_CMD_STORE 1
/* [out] memref 0: the bytes kept by HUK_PROBE_CMD_STORE */
#define HUK_PROBE_CMD_LOAD 2

#endif
