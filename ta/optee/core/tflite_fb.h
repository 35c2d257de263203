/*
 * tflite_fb.h - a minimal, bounds-checked reader of the TFLite flatbuffer
 * schema (tensorflow/compiler/mlir/lite/schema/schema.fbs), reading the
 * model bytes in place.
 *
 * Two layers: tfb_* reads flatbuffer tables, vectors and scalars, checking
 * every offset, vtable, length and index against the buffer (all reads are
 * byte-wise little-endian, so nothing depends on the buffer's alignment);
 * tfl_* reads the few TFLite tables the engine needs. Nothing recurses.
 */
#ifndef OMG_TFLITE_FB_H
#define OMG_TFLITE_FB_H

#include "omg_core.h"

/* ---- flatbuffer layer -------------------------------------------------- */

typedef struct {
	const uint8_t *buf;
	size_t len;
} tfb_buf;

typedef struct {
	size_t pos;		/* the table (its soffset to the vtable) */
	size_t vtab;		/* its vtable */
	uint16_t vt_len;	/* vtable bytes */
	uint16_t tab_len;	/* table bytes */
} tfb_table;

typedef struct {
	size_t pos;		/* the first element */
	uint32_t n;		/* elements */
	uint32_t esz;		/* bytes per element */
} tfb_vec;

/* Each returns false if the buffer is malformed there; an absent field
 * gives the default (scalars), an empty vector, or *present = false. */
bool tfb_table_at(const tfb_buf *b, size_t pos, tfb_table *t);
bool tfb_u8(const tfb_buf *b, const tfb_table *t, unsigned field, uint8_t def, uint8_t *v);
bool tfb_i32(const tfb_buf *b, const tfb_table *t, unsigned field, int32_t def, int32_t *v);
bool tfb_u64(const tfb_buf *b, const tfb_table *t, unsigned field, uint64_t def, uint64_t *v);
bool tfb_f32(const tfb_buf *b, const tfb_table *t, unsigned field, float def, float *v);
bool tfb_table_field(const tfb_buf *b, const tfb_table *t, unsigned field,
		     tfb_table *out, bool *present);
bool tfb_vec_field(const tfb_buf *b, const tfb_table *t, unsigned field,
		   uint32_t esz, tfb_vec *v, bool *present);
/* element i of a vector of tables */
bool tfb_vec_table(const tfb_buf *b, const tfb_vec *v, uint32_t i, tfb_table *out);
/* element i of a vector of scalars; i < v->n is checked (0 otherwise) */
int32_t tfb_vec_i32(const tfb_buf *b, const tfb_vec *v, uint32_t i);
int64_t tfb_vec_i64(const tfb_buf *b, const tfb_vec *v, uint32_t i);
float tfb_vec_f32(const tfb_buf *b, const tfb_vec *v, uint32_t i);

/* little-endian loads */
uint32_t tfb_le32(const uint8_t *p);

/* ---- TFLite layer ------------------------------------------------------ */

#define TFL_MAX_RANK 8

/* schema.fbs TensorType values used here */
enum {
	TFL_FLOAT32 = 0, TFL_INT32 = 2, TFL_INT64 = 4, TFL_INT8 = 9
};

/* schema.fbs BuiltinOperator values used here */
enum {
	TFL_OP_AVERAGE_POOL_2D = 1, TFL_OP_CONV_2D = 3, TFL_OP_DEPTHWISE_CONV_2D = 4,
	TFL_OP_FULLY_CONNECTED = 9, TFL_OP_RESHAPE = 22, TFL_OP_SOFTMAX = 25,
	TFL_OP_MEAN = 40, TFL_OP_STRIDED_SLICE = 45, TFL_OP_SHAPE = 77,
	TFL_OP_PACK = 83
};

/* schema.fbs BuiltinOptions union types used here */
enum {
	TFL_OPT_CONV2D = 1, TFL_OPT_DEPTHWISE_CONV2D = 2, TFL_OPT_POOL2D = 5,
	TFL_OPT_FULLY_CONNECTED = 8, TFL_OPT_SOFTMAX = 9, TFL_OPT_RESHAPE = 17,
	TFL_OPT_REDUCER = 27, TFL_OPT_STRIDED_SLICE = 32, TFL_OPT_SHAPE = 55,
	TFL_OPT_PACK = 59
};

typedef struct {
	tfb_buf b;
	tfb_table subgraph;
	tfb_vec opcodes;	/* [OperatorCode] */
	tfb_vec buffers;	/* [Buffer] */
	tfb_vec tensors;	/* subgraph 0 [Tensor] */
	tfb_vec operators;	/* subgraph 0 [Operator] */
	tfb_vec inputs;		/* subgraph 0 [int] */
	tfb_vec outputs;	/* subgraph 0 [int] */
} tfl_model;

typedef struct {
	int32_t type;			/* TensorType */
	uint32_t rank;
	int32_t dims[TFL_MAX_RANK];
	const uint8_t *data;		/* constant data in the model, or NULL */
	size_t data_len;
	bool has_quant;
	tfb_vec scale;			/* [float] */
	tfb_vec zero_point;		/* [long] */
	int32_t quant_dim;
	bool sparse;			/* has sparsity parameters */
	bool external;			/* data in an external buffer */
} tfl_tensor;

typedef struct {
	int32_t code;			/* BuiltinOperator, max(deprecated, builtin) */
	tfb_vec inputs;			/* [int] */
	tfb_vec outputs;		/* [int] */
	uint8_t options_type;		/* BuiltinOptions */
	bool has_options;
	tfb_table options;
} tfl_op;

/* Checks the file identifier and the root tables; subgraph 0 is the model. */
omg_status tfl_open(tfl_model *m, const uint8_t *model, size_t len, char *err, size_t errlen);
omg_status tfl_tensor_get(const tfl_model *m, uint32_t index, tfl_tensor *t,
			  char *err, size_t errlen);
omg_status tfl_op_get(const tfl_model *m, uint32_t index, tfl_op *op, char *err, size_t errlen);

uint32_t tfl_num_tensors(const tfl_model *m);
uint32_t tfl_num_ops(const tfl_model *m);

/* Names for messages: "CONV_2D", "FLOAT32"; "an unknown operator", "of an
 * unknown type" for values past the table. */
const char *tfl_op_name(int32_t code);
const char *tfl_type_name(int32_t type);

#endif /* OMG_TFLITE_FB_H */
