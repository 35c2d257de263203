/*
 * omg_core.h - the portable core of the keyword TA.
 *
 * C11, no GlobalPlatform calls, no libc beyond what OP-TEE's libutils gives
 * a TA (string.h's mem* functions, stdint/stddef/stdbool); no libm, no
 * stdio, no malloc. The same sources build into the OP-TEE TA (ta/optee/ta)
 * and into a host shared library the workbench loads (ta/optee/hostlib), so
 * the workbench runs and cross-checks the very code the TA runs.
 *
 * Every function returns an omg_status: OMG_OK or a result code of the
 * contract (include/omg_ta.h). Where a caller can give an error buffer, a
 * failure also leaves one line there saying what is wrong.
 *
 * Memory: nothing here allocates. The engine and the frontend are given one
 * arena by the caller, sized beforehand by their *_plan functions; inference
 * touches nothing else.
 */
#ifndef OMG_CORE_H
#define OMG_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../include/omg_ta.h"

typedef uint32_t omg_status;
#define OMG_OK 0u

/* A view of bytes owned by someone else (the model, a package, a license). */
typedef struct {
	const uint8_t *ptr;
	size_t len;
} omg_bytes;

/* Writes a formatted one-line message into err (never more than errlen
 * bytes, always NUL-terminated); returns code. Only %s, %d, %u and %zu. */
omg_status omg_fail(char *err, size_t errlen, omg_status code, const char *fmt, ...);
omg_status omg_vfail(char *err, size_t errlen, omg_status code, const char *fmt, va_list ap);

/* ------------------------------------------------------------------------
 * The int8 engine: reads a .tflite flatbuffer in place and runs it.
 *
 * Operators: CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, MEAN (over H, W),
 * FULLY_CONNECTED, SOFTMAX, RESHAPE; int8 activations, int8 weights
 * (per-channel or per-tensor), int32 biases, fused NONE/RELU/RELU6 -
 * TFLite's reference integer kernels, bit for bit. Anything else is refused
 * at plan time, naming the operator or type.
 * ---------------------------------------------------------------------- */

#define OMG_MAX_TENSORS 256
#define OMG_MAX_OPS 128
#define OMG_MAX_DIMS 4

typedef struct {
	size_t arena_bytes;      /* what omg_engine_init needs (activations + params) */
	size_t activation_bytes; /* of which: tensors alive at once, planned */
	size_t scratch_bytes;    /* of which: per-channel multipliers, scratch */
	size_t weight_bytes;     /* read in place from the model (not in the arena) */
	uint32_t num_ops;
	uint32_t num_tensors;
	uint64_t macs;           /* multiply-accumulates per inference */
	int32_t input_dims[OMG_MAX_DIMS];  /* e.g. 1, 49, 10, 1 */
	uint32_t input_rank;
	uint32_t output_size;    /* number of scores */
} omg_plan;

/* Checks a model and says how much arena it needs. The model bytes must stay
 * alive and unchanged for as long as an engine made from them. */
omg_status omg_engine_plan(const uint8_t *model, size_t len, omg_plan *plan,
			   char *err, size_t errlen);

typedef struct omg_engine omg_engine; /* lives at the start of the arena */

/* Lays the engine out in arena (plan->arena_bytes, 16-byte aligned) and
 * precomputes every requantization parameter. */
omg_status omg_engine_init(omg_engine **engine, const uint8_t *model, size_t len,
			   void *arena, size_t arena_len, char *err, size_t errlen);

/* Quantization of the model's input and output tensors. */
typedef struct {
	float input_scale;
	int32_t input_zero_point;
	float output_scale;
	int32_t output_zero_point;
	uint32_t input_bytes;   /* int8 elements of one input */
	uint32_t output_bytes;  /* int8 elements of one output */
} omg_io;

void omg_engine_io(const omg_engine *e, omg_io *io);

/* One inference: input_bytes int8 in, output_bytes int8 out. */
omg_status omg_engine_invoke(omg_engine *e, const int8_t *input, int8_t *output);

/* ------------------------------------------------------------------------
 * The feature frontend: the same settings as omg_ta.frontend.FrontendSettings
 * and the same maths (periodic Hann window, magnitude spectrum, HTK mel,
 * log, DCT-II scaled as tf.signal), in double inside, float out; no libm.
 * ---------------------------------------------------------------------- */

enum { OMG_FE_MFCC = 0, OMG_FE_LOGMEL = 1 };

typedef struct {
	int32_t kind;            /* OMG_FE_MFCC or OMG_FE_LOGMEL */
	int32_t sample_rate;
	int32_t clip_ms;
	double window_ms;
	double hop_ms;
	int32_t num_mel_bins;
	int32_t num_coefficients;
	double lower_hz;
	double upper_hz;
	double log_offset;
	double log_floor;        /* log(max(E + log_offset, log_floor)); 0: off */
} omg_fe_settings;

typedef struct {
	int32_t clip_samples, window_samples, hop_samples, fft_length;
	int32_t num_frames, num_features;
	size_t state_bytes;      /* what omg_frontend_init needs */
} omg_fe_plan;

omg_status omg_frontend_plan(const omg_fe_settings *s, omg_fe_plan *plan,
			     char *err, size_t errlen);

typedef struct omg_frontend omg_frontend;

omg_status omg_frontend_init(omg_frontend **fe, const omg_fe_settings *s,
			     void *mem, size_t mem_len, char *err, size_t errlen);

/* Features of one clip of clip_samples int16 samples: num_frames x
 * num_features floats, row-major. */
omg_status omg_frontend_run(omg_frontend *fe, const int16_t *clip, float *features);

/* Quantizes n floats as the workbench does: round-half-even(x / scale) + zp,
 * in float32, clamped to int8. */
void omg_quantize(const float *x, size_t n, float scale, int32_t zero_point, int8_t *out);

/* ------------------------------------------------------------------------
 * Parsers: bounded CBOR, COSE_Sign1 structure, the package header and the
 * license payload (docs/formats.md). Structure only: signatures are checked
 * by the caller (the GP Internal API in the TA). Hard limits on every length,
 * on item counts and on nesting; anything outside them is refused.
 * ---------------------------------------------------------------------- */

#define OMG_MAX_LABELS 64
#define OMG_MAX_LABEL_LEN 64
#define OMG_MAX_ID_LEN 128
#define OMG_MAX_CBOR_DEPTH 8
#define OMG_MAX_CBOR_ITEMS 4096
#define OMG_MAX_HEADER (64 * 1024)
#define OMG_MAX_MESSAGE (1 << 20)

typedef struct {
	omg_bytes model_id;
	uint64_t model_version;
	omg_bytes runtime;
	omg_fe_settings frontend;
	uint32_t num_labels;
	omg_bytes labels[OMG_MAX_LABELS];
	uint8_t pt_sha256[32];
	uint64_t pt_len;
	uint64_t seg_size;
	uint8_t nonce_prefix[7];
	omg_bytes header_raw;    /* the exact CBOR bytes, as signed */
	omg_bytes signed_prefix; /* magic || hlen || header */
	omg_bytes signature;     /* 64 bytes */
	size_t body_offset;      /* first segment */
} omg_pkg_header;

/* RESULT_PACKAGE_INTEGRITY for anything malformed. */
omg_status omg_package_parse_header(const uint8_t *blob, size_t len, omg_pkg_header *h);

typedef struct {
	omg_bytes protected_raw;
	omg_bytes kid;           /* empty if absent */
	omg_bytes payload;
	omg_bytes signature;     /* 64 bytes */
} omg_sign1;

/* error: the result code to fail with (LICENSE_INVALID, TOKEN_INVALID, ...) */
omg_status omg_cose_parse_sign1(const uint8_t *msg, size_t len, omg_status error,
				omg_sign1 *out);

typedef struct {
	uint8_t license_id[16];
	omg_bytes model_id;
	uint64_t model_version;
	omg_bytes device_id;
	uint8_t measurement[32];
	int64_t issued_at;
	int64_t not_after;
	int64_t min_version;
	bool has_budget;
	uint64_t budget;
	bool scores;
	omg_bytes kem;
	omg_bytes wrapped_key;
} omg_license;

/* RESULT_LICENSE_INVALID for anything malformed. */
omg_status omg_license_parse_payload(const uint8_t *payload, size_t len, omg_license *out);

#endif /* OMG_CORE_H */
