/*
 * The keyword TA's properties for OP-TEE's TA header.
 *
 * One TA instance per session (TA_FLAGS 0): every session loads, verifies
 * and measures the TA again, as in the emulated TEE. The heap and stack are
 * what `omg plan --target optee-qemu` compares a model's needs with.
 */
#ifndef USER_TA_HEADER_DEFINES_H
#define USER_TA_HEADER_DEFINES_H

#include "omg_ta.h"

#define TA_UUID			OMG_TA_UUID
#define TA_FLAGS		0
#define TA_STACK_SIZE		(16 * 1024)
#define TA_DATA_SIZE		(512 * 1024)
#define TA_VERSION		"1.0"
#define TA_DESCRIPTION		"omgkit keyword spotting (Offline Model Guard)"

#endif /* USER_TA_HEADER_DEFINES_H */
