/*
 * omg_ta.h - the contract between the normal world and the keyword TA.
 *
 * The C mirror of ta/omg_ta/commands.py, field by field (tests/test_c_core.py
 * checks every value against it). Host and TA both include it, as in OP-TEE's
 * optee_examples. Portable: no GlobalPlatform header needed; the parameter
 * types are TEEC_/TEE_PARAM_TYPE_* values.
 */
#ifndef OMG_TA_H
#define OMG_TA_H

/* The keyword-spotting TA: 6f6d676b-6974-4b57-5300-000000000001 */
#define OMG_TA_UUID_STR "6f6d676b-6974-4b57-5300-000000000001"
#define OMG_TA_UUID \
	{ 0x6f6d676b, 0x6974, 0x4b57, \
		{ 0x53, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01 } }

/* The clip format */
#define OMG_SAMPLE_RATE		16000	/* samples per second */
#define OMG_CLIP_SAMPLES	16000	/* one second */
#define OMG_SAMPLE_BYTES	2	/* int16, little-endian */
#define OMG_CLIP_BYTES		32000	/* OMG_CLIP_SAMPLES * OMG_SAMPLE_BYTES */

/* Limits */
#define OMG_MAX_BATCH		4096	/* most clips one CMD_CLASSIFY takes (p0.b) */
#define OMG_SHARED_WINDOW_CLIPS	64	/* clips per shared-memory window (host) */
#define OMG_NONCE_MIN		16	/* attestation nonce, bytes */
#define OMG_NONCE_MAX		64
#define OMG_MAX_OUTPUT		0x1000000 /* default output memref, bytes */

/* Parameter types (TEEC_NONE ... TEEC_MEMREF_TEMP_INOUT) */
#define OMG_NONE		0x0
#define OMG_VALUE_INPUT		0x1
#define OMG_VALUE_OUTPUT	0x2
#define OMG_VALUE_INOUT		0x3
#define OMG_MEMREF_INPUT	0x5
#define OMG_MEMREF_OUTPUT	0x6
#define OMG_MEMREF_INOUT	0x7
#define OMG_PARAM_TYPES(t0, t1, t2, t3) \
	((t0) | ((t1) << 4) | ((t2) << 8) | ((t3) << 12))

/*
 * CMD_GET_ATTESTATION - attest this TA to a vendor.
 * p0 MEMREF_INPUT:  the vendor's nonce (OMG_NONCE_MIN..OMG_NONCE_MAX bytes)
 * p1 MEMREF_OUTPUT: the attestation token, COSE_Sign1 (docs/formats.md)
 * p2, p3 NONE
 */
#define OMG_CMD_GET_ATTESTATION	0
#define OMG_SIG_CMD_GET_ATTESTATION 0x0065
/*
 * CMD_PROVISION - take a license, unwrap its model key, seal it to this TA.
 * p0 MEMREF_INPUT:  the license, COSE_Sign1 signed by the vendor
 * p1 MEMREF_OUTPUT: the sealed key blob (for normal-world storage)
 * p2, p3 NONE.  Needs CMD_GET_ATTESTATION earlier in the same session.
 */
#define OMG_CMD_PROVISION	1
#define OMG_SIG_CMD_PROVISION	0x0065
/*
 * CMD_INITIALIZE - unseal the key, check the license, decrypt and check the
 * model. The model must load and fit its frontend and labels before any
 * counter or budget changes.
 * p0 MEMREF_INPUT:  the sealed key blob
 * p1 MEMREF_INPUT:  the license
 * p2 MEMREF_INPUT:  the sealed model package
 * p3 MEMREF_OUTPUT: model info, CBOR {model_id, model_version, labels,
 *                   runtime, scores_allowed, budget_left}
 */
#define OMG_CMD_INITIALIZE	2
#define OMG_SIG_CMD_INITIALIZE	0x6555
/*
 * CMD_CLASSIFY - classify audio inside the TA; only labels (and scores, if
 * the license allows) leave.
 * p0 VALUE_INPUT:   a = source (OMG_SOURCE_MIC or OMG_SOURCE_BUFFER),
 *                   b = most clips (1..OMG_MAX_BATCH)
 * p1 MEMREF_INPUT:  with OMG_SOURCE_BUFFER, int16 little-endian audio, whole
 *                   clips of OMG_CLIP_BYTES; NONE with OMG_SOURCE_MIC
 * p2 MEMREF_OUTPUT: results, CBOR {labels: [int], scores: [[float]] or absent};
 *                   at least OMG_CLASSIFY_REPLY_MAX(p0.b, labels, scores
 *                   allowed) bytes, else OMG_RESULT_SHORT_BUFFER (with that
 *                   size) before any audio is read or any budget spent
 * p3 NONE
 */
#define OMG_CMD_CLASSIFY	3
#define OMG_SIG_CMD_CLASSIFY	0x0651
#define OMG_CLASSIFY_MIC_SIGNATURE 0x0601
/* The most bytes of a CMD_CLASSIFY reply (commands.classify_reply_max) */
#define OMG_CLASSIFY_REPLY_FIXED	24	/* the map, two keys, two array heads */
#define OMG_CLASSIFY_REPLY_PER_CLIP	3	/* one label */
#define OMG_CLASSIFY_REPLY_PER_SCORE_ROW 3	/* the head of one clip's scores */
#define OMG_CLASSIFY_REPLY_PER_SCORE	9	/* one score (float64; we write float32) */
#define OMG_CLASSIFY_REPLY_MAX(clips, classes, scores)                          \
	(OMG_CLASSIFY_REPLY_FIXED +                                             \
	 (size_t)(clips) * (OMG_CLASSIFY_REPLY_PER_CLIP +                       \
			    ((scores) ? OMG_CLASSIFY_REPLY_PER_SCORE_ROW +           \
					(size_t)(classes) * OMG_CLASSIFY_REPLY_PER_SCORE \
				      : 0)))
/* CMD_CLOSE - wipe the model and the key from TA memory. All NONE. */
#define OMG_CMD_CLOSE		4
#define OMG_SIG_CMD_CLOSE	0x0000
/*
 * CMD_LAST_ERROR - the message of this session's last failed command (GP
 * carries only a result code).
 * p0 MEMREF_OUTPUT: the message, UTF-8, at most 255 bytes; empty if nothing
 *                   failed or if the failure was a security refusal
 * p1, p2, p3 NONE
 */
#define OMG_CMD_LAST_ERROR	5
#define OMG_SIG_CMD_LAST_ERROR	0x0006

#define OMG_SOURCE_MIC		0
#define OMG_SOURCE_BUFFER	1

/* Result codes: GlobalPlatform's where one fits, OMG's own otherwise */
#define OMG_TEE_SUCCESS			0x00000000
#define OMG_RESULT_GENERIC		0xFFFF0000
#define OMG_RESULT_BAD_PARAMETERS	0xFFFF0006
#define OMG_RESULT_BAD_STATE		0xFFFF0007
#define OMG_RESULT_ITEM_NOT_FOUND	0xFFFF0008
#define OMG_RESULT_OUT_OF_MEMORY	0xFFFF000C
#define OMG_RESULT_COMMUNICATION	0xFFFF000E
#define OMG_RESULT_SECURITY		0xFFFF000F
#define OMG_RESULT_SHORT_BUFFER		0xFFFF0010
#define OMG_RESULT_MAC_INVALID		0xFFFF3071
#define OMG_RESULT_PACKAGE_INTEGRITY	0x80000101
#define OMG_RESULT_LICENSE_INVALID	0x80000102
#define OMG_RESULT_TOKEN_INVALID	0x80000103
#define OMG_RESULT_UNSEAL		0x80000104
#define OMG_RESULT_DEVICE_MISMATCH	0x80000105
#define OMG_RESULT_LICENSE_EXPIRED	0x80000106
#define OMG_RESULT_ROLLBACK		0x80000107
#define OMG_RESULT_BUDGET_EXHAUSTED	0x80000108
#define OMG_RESULT_TA_LOAD		0x80000109
#define OMG_RESULT_MEASUREMENT_NOT_APPROVED 0x8000010A
#define OMG_RESULT_NONCE		0x8000010B
#define OMG_RESULT_MODEL_FORMAT		0x80000201
#define OMG_RESULT_RUNTIME_UNAVAILABLE	0x80000202
#define OMG_RESULT_CONFIG		0x80000203
#define OMG_RESULT_ARTIFACT		0x80000204

/* The TA bundle's files (the Python TA's; the C TA is one signed ELF) */
#define OMG_BUNDLE_SIG_FILE	"bundle.sig"
#define OMG_VENDOR_KEY_FILE	"vendor_ed25519.pub"

#endif /* OMG_TA_H */
