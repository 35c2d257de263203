/*
 * omg_pta.h - the OMG pseudo-TA in our OP-TEE build: what the TEE core does
 * for the keyword TA that a TA cannot do for itself.
 *
 * OP-TEE's secure storage is keyed by the hardware unique key (HUK) and the
 * TA's UUID, so any TA signed with the TA signing key under our UUID - a
 * leaked key is enough - could read what the real TA stored. This PTA
 * restores OMG's binding to the TA's *measurement*: the SHA-256 of the TA's
 * ELF image that the core verified against the signed header when it loaded
 * this TA instance (recorded by patches/0001-record-the-loaded-ta-digest.patch).
 * The device's attestation key is derived from the HUK inside the core and
 * never leaves it; tokens are built here, with the measurement the core
 * knows, not one the TA claims.
 *
 * Only a user TA may call MEASUREMENT, SEAL_KEY and SIGN_CLAIMS (each acts
 * for its caller); DEVICE_INFO is also open to the normal world, for
 * enrolment (the manufacturer certifies the device key once).
 */
#ifndef OMG_PTA_H
#define OMG_PTA_H

/* 6f6d676b-7074-6100-0000-000000000001 ("omgk" "pt" "a") */
#define OMG_PTA_UUID_STR "6f6d676b-7074-6100-0000-000000000001"
#define OMG_PTA_UUID \
	{ 0x6f6d676b, 0x7074, 0x6100, \
		{ 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01 } }

#define OMG_PTA_MEASUREMENT_LEN	32
#define OMG_PTA_KEY_LEN		32
#define OMG_PTA_DEVICE_ID_LEN	16
#define OMG_PTA_PUBLIC_KEY_LEN	32
#define OMG_PTA_MAX_LABEL	64

/*
 * MEASUREMENT - the calling TA's measurement.
 * p0 MEMREF_OUTPUT: 32 bytes
 */
#define OMG_PTA_CMD_MEASUREMENT	0
/*
 * SEAL_KEY - a key bound to this device and to the calling TA's measurement:
 * HMAC-SHA256(HUK, usage || "OMG-SEAL-v1" || measurement || label), through
 * OP-TEE's huk_subkey_derive().
 * p0 MEMREF_INPUT:  label (at most OMG_PTA_MAX_LABEL bytes)
 * p1 MEMREF_OUTPUT: 32 bytes
 */
#define OMG_PTA_CMD_SEAL_KEY	1
/*
 * DEVICE_INFO - the device attestation key (Ed25519, derived from the HUK)
 * and the device id (the first 16 bytes of SHA-256 of that public key).
 * p0 MEMREF_OUTPUT: 32-byte public key
 * p1 MEMREF_OUTPUT: 16-byte device id
 * p2 MEMREF_OUTPUT: TEE version, text (e.g. "OP-TEE 4.10.0 (QEMU)")
 */
#define OMG_PTA_CMD_DEVICE_INFO	2
/*
 * SIGN_CLAIMS - an attestation token for the calling TA: a COSE_Sign1
 * (EdDSA) over the claims of docs/formats.md - the nonce, the device id,
 * the REE time, the profile, the caller's measurement and UUID, its
 * key-transport public key and the TEE version - signed with the device key.
 * The unprotected header is empty: the certificate chain is public and is
 * attached by the normal world.
 * p0 MEMREF_INPUT:  the vendor's nonce (16 to 64 bytes)
 * p1 MEMREF_INPUT:  the TA's X25519 public key (32 bytes)
 * p2 MEMREF_OUTPUT: the token
 */
#define OMG_PTA_CMD_SIGN_CLAIMS	3

#endif /* OMG_PTA_H */
