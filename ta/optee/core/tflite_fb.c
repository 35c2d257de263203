/*
 * tflite_fb.c - a minimal, bounds-checked reader of the TFLite flatbuffer.
 *
 * Flatbuffer rules checked here (flatbuffers/verifier.h does the same and
 * more): a table starts with a signed offset to its vtable; the vtable holds
 * its own size, the table's size and one 16-bit offset per field (0:
 * absent); a field lies inside its table; an offset to a sub-object is an
 * unsigned 32-bit distance forward; a vector is a 32-bit count followed by
 * its elements. Every one of these is checked against the buffer before it
 * is used, with no arithmetic that can overflow.
 *
 * Field numbers (schema.fbs, TFLite schema version 3):
 *   Model: 0 version, 1 operator_codes, 2 subgraphs, 4 buffers
 *   OperatorCode: 0 deprecated_builtin_code (byte), 3 builtin_code (int)
 *   SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators
 *   Tensor: 0 shape, 1 type, 2 buffer, 4 quantization, 6 sparsity,
 *           10 external_buffer
 *   QuantizationParameters: 2 scale, 3 zero_point, 6 quantized_dimension
 *   Operator: 0 opcode_index, 1 inputs, 2 outputs, 3 builtin_options_type,
 *             4 builtin_options
 *   Buffer: 0 data, 1 offset, 2 size
 */
#include <string.h>

#include "tflite_fb.h"

#define MF OMG_RESULT_MODEL_FORMAT

/* ---- flatbuffer layer -------------------------------------------------- */

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t tfb_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)tfb_le32(p) | ((uint64_t)tfb_le32(p + 4) << 32);
}

/* do [pos, pos + n) lie inside the buffer? */
static bool inside(const tfb_buf *b, size_t pos, size_t n)
{
	return pos <= b->len && n <= b->len - pos;
}

bool tfb_table_at(const tfb_buf *b, size_t pos, tfb_table *t)
{
	int64_t vt;
	uint16_t vt_len, tab_len;

	if (!inside(b, pos, 4))
		return false;
	vt = (int64_t)pos - (int64_t)(int32_t)tfb_le32(b->buf + pos);
	if (vt < 0 || !inside(b, (size_t)vt, 4))
		return false;
	vt_len = le16(b->buf + vt);
	tab_len = le16(b->buf + vt + 2);
	if (vt_len < 4 || (vt_len & 1) || !inside(b, (size_t)vt, vt_len))
		return false;
	if (tab_len < 4 || !inside(b, pos, tab_len))
		return false;
	t->pos = pos;
	t->vtab = (size_t)vt;
	t->vt_len = vt_len;
	t->tab_len = tab_len;
	return true;
}

/* Where field lies (size bytes), or 0 if absent; false if malformed. */
static bool field_pos(const tfb_table *t, const tfb_buf *b, unsigned field, size_t size,
		      size_t *pos)
{
	const size_t slot = 4 + 2 * (size_t)field;
	uint16_t off;

	*pos = 0;
	if (field > 1000 || slot + 2 > t->vt_len)
		return true;
	off = le16(b->buf + t->vtab + slot);
	if (!off)
		return true;
	if (off < 4 || off > t->tab_len || size > (size_t)(t->tab_len - off))
		return false;
	*pos = t->pos + off;
	return true;
}

static bool scalar(const tfb_buf *b, const tfb_table *t, unsigned field, size_t size,
		   uint64_t def, uint64_t *v)
{
	size_t pos;

	if (!field_pos(t, b, field, size, &pos))
		return false;
	if (!pos)
		*v = def;
	else if (size == 1)
		*v = b->buf[pos];
	else if (size == 4)
		*v = tfb_le32(b->buf + pos);
	else
		*v = le64(b->buf + pos);
	return true;
}

bool tfb_u8(const tfb_buf *b, const tfb_table *t, unsigned field, uint8_t def, uint8_t *v)
{
	uint64_t x;

	if (!scalar(b, t, field, 1, def, &x))
		return false;
	*v = (uint8_t)x;
	return true;
}

bool tfb_i32(const tfb_buf *b, const tfb_table *t, unsigned field, int32_t def, int32_t *v)
{
	uint64_t x;

	if (!scalar(b, t, field, 4, (uint32_t)def, &x))
		return false;
	*v = (int32_t)(uint32_t)x;
	return true;
}

bool tfb_u64(const tfb_buf *b, const tfb_table *t, unsigned field, uint64_t def, uint64_t *v)
{
	return scalar(b, t, field, 8, def, v);
}

bool tfb_f32(const tfb_buf *b, const tfb_table *t, unsigned field, float def, float *v)
{
	uint32_t bits;
	uint64_t x;

	memcpy(&bits, &def, sizeof(bits));
	if (!scalar(b, t, field, 4, bits, &x))
		return false;
	bits = (uint32_t)x;
	memcpy(v, &bits, sizeof(*v));
	return true;
}

/* Follows the uoffset at pos to what it points at. */
static bool follow(const tfb_buf *b, size_t pos, size_t *target)
{
	uint32_t rel;

	if (!inside(b, pos, 4))
		return false;
	rel = tfb_le32(b->buf + pos);
	if (!rel || !inside(b, pos, rel))
		return false;
	*target = pos + rel;
	return true;
}

bool tfb_table_field(const tfb_buf *b, const tfb_table *t, unsigned field,
		     tfb_table *out, bool *present)
{
	size_t pos, target;

	*present = false;
	if (!field_pos(t, b, field, 4, &pos))
		return false;
	if (!pos)
		return true;
	if (!follow(b, pos, &target) || !tfb_table_at(b, target, out))
		return false;
	*present = true;
	return true;
}

bool tfb_vec_field(const tfb_buf *b, const tfb_table *t, unsigned field,
		   uint32_t esz, tfb_vec *v, bool *present)
{
	size_t pos, target;
	uint32_t n;

	v->pos = 0;
	v->n = 0;
	v->esz = esz;
	if (present)
		*present = false;
	if (!field_pos(t, b, field, 4, &pos))
		return false;
	if (!pos)
		return true;
	if (!follow(b, pos, &target) || !inside(b, target, 4))
		return false;
	n = tfb_le32(b->buf + target);
	if (!esz || n > (b->len - target - 4) / esz)
		return false;
	v->pos = target + 4;
	v->n = n;
	if (present)
		*present = true;
	return true;
}

bool tfb_vec_table(const tfb_buf *b, const tfb_vec *v, uint32_t i, tfb_table *out)
{
	size_t target;

	if (v->esz != 4 || i >= v->n)
		return false;
	return follow(b, v->pos + 4 * (size_t)i, &target) && tfb_table_at(b, target, out);
}

int32_t tfb_vec_i32(const tfb_buf *b, const tfb_vec *v, uint32_t i)
{
	if (v->esz != 4 || i >= v->n)
		return 0;
	return (int32_t)tfb_le32(b->buf + v->pos + 4 * (size_t)i);
}

int64_t tfb_vec_i64(const tfb_buf *b, const tfb_vec *v, uint32_t i)
{
	if (v->esz != 8 || i >= v->n)
		return 0;
	return (int64_t)le64(b->buf + v->pos + 8 * (size_t)i);
}

float tfb_vec_f32(const tfb_buf *b, const tfb_vec *v, uint32_t i)
{
	uint32_t bits;
	float f;

	if (v->esz != 4 || i >= v->n)
		return 0.0f;
	bits = tfb_le32(b->buf + v->pos + 4 * (size_t)i);
	memcpy(&f, &bits, sizeof(f));
	return f;
}

/* ---- TFLite layer ------------------------------------------------------ */

static const char *const op_names[] = {
	"ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D",
	"DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
	"EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP",
	"L2_NORMALIZATION", "L2_POOL_2D", "LOCAL_RESPONSE_NORMALIZATION",
	"LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MUL", "RELU",
	"RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN",
	"SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH", "CONCAT_EMBEDDINGS",
	"SKIP_GRAM", "CALL", "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD",
	"UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND",
	"SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB", "DIV", "SQUEEZE",
	"UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE",
	"BIDIRECTIONAL_SEQUENCE_RNN", "EXP", "TOPK_V2", "SPLIT", "LOG_SOFTMAX",
	"DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM",
	"ARG_MAX", "MINIMUM", "LESS", "NEG", "PADV2", "GREATER",
	"GREATER_EQUAL", "LESS_EQUAL", "SELECT", "SLICE", "SIN",
	"TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL",
	"NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT", "SHAPE", "POW", "ARG_MIN",
	"FAKE_QUANT", "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR",
	"ONE_HOT", "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN",
	"FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE", "FILL", "FLOOR_MOD",
	"RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE",
	"MIRROR_PAD", "ABS", "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2",
	"ADD_N", "GATHER_ND", "COS", "WHERE", "RANK", "ELU",
	"REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG",
	"ROUND", "HARD_SWISH", "IF", "WHILE", "NON_MAX_SUPPRESSION_V4",
	"NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY",
	"SEGMENT_SUM", "BATCH_MATMUL", "PLACEHOLDER_FOR_GREATER_OP_CODES",
	"CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D", "IMAG",
	"REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND",
	"HASHTABLE_IMPORT", "HASHTABLE_SIZE", "REDUCE_ALL",
	"CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE",
	"BROADCAST_ARGS", "RANDOM_STANDARD_NORMAL", "BUCKETIZE",
	"RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE",
	"RELU_0_TO_1", "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX",
	"UNSORTED_SEGMENT_SUM", "ATAN2", "UNSORTED_SEGMENT_MIN", "SIGN",
	"BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC",
	"STABLEHLO_ADD", "STABLEHLO_DIVIDE", "STABLEHLO_MULTIPLY",
	"STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE", "STABLEHLO_CLAMP",
	"STABLEHLO_CONCATENATE", "STABLEHLO_BROADCAST_IN_DIM",
	"STABLEHLO_CONVOLUTION", "STABLEHLO_SLICE", "STABLEHLO_CUSTOM_CALL",
	"STABLEHLO_REDUCE", "STABLEHLO_ABS", "STABLEHLO_AND",
	"STABLEHLO_COSINE", "STABLEHLO_EXPONENTIAL", "STABLEHLO_FLOOR",
	"STABLEHLO_LOG", "STABLEHLO_MINIMUM", "STABLEHLO_NEGATE",
	"STABLEHLO_OR", "STABLEHLO_POWER", "STABLEHLO_REMAINDER",
	"STABLEHLO_RSQRT", "STABLEHLO_SELECT", "STABLEHLO_SUBTRACT",
	"STABLEHLO_TANH", "STABLEHLO_SCATTER", "STABLEHLO_COMPARE",
	"STABLEHLO_CONVERT", "STABLEHLO_DYNAMIC_SLICE",
	"STABLEHLO_DYNAMIC_UPDATE_SLICE", "STABLEHLO_PAD", "STABLEHLO_IOTA",
	"STABLEHLO_DOT_GENERAL", "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SORT",
	"STABLEHLO_WHILE", "STABLEHLO_GATHER", "STABLEHLO_TRANSPOSE", "DILATE",
	"STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW", "STABLEHLO_COMPOSITE",
	"STABLEHLO_SHIFT_LEFT", "STABLEHLO_CBRT", "STABLEHLO_CASE"
};

static const char *const type_names[] = {
	"FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16",
	"COMPLEX64", "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE",
	"VARIANT", "UINT32", "UINT16", "INT4", "BFLOAT16", "INT2", "UINT4",
	"FLOAT8_E4M3FN", "FLOAT8_E5M2"
};

const char *tfl_op_name(int32_t code)
{
	if (code < 0 || (size_t)code >= sizeof(op_names) / sizeof(op_names[0]))
		return "an unknown operator";
	return op_names[code];
}

const char *tfl_type_name(int32_t type)
{
	if (type < 0 || (size_t)type >= sizeof(type_names) / sizeof(type_names[0]))
		return "of an unknown type";
	return type_names[type];
}

static omg_status malformed(char *err, size_t errlen, const char *what, uint32_t index)
{
	return omg_fail(err, errlen, MF, "malformed model: %s %u is truncated or corrupt",
			what, index);
}

omg_status tfl_open(tfl_model *m, const uint8_t *model, size_t len, char *err, size_t errlen)
{
	tfb_table root;
	tfb_vec subgraphs;
	size_t pos;
	int32_t version;

	memset(m, 0, sizeof(*m));
	if (!model || len < 8 || memcmp(model + 4, "TFL3", 4) != 0)
		return omg_fail(err, errlen, MF,
				"not a TensorFlow Lite model (no TFL3 identifier)");
	if (len > 0x7fffffffu)
		return omg_fail(err, errlen, MF, "model of %zu bytes: at most 2 GiB", len);
	m->b.buf = model;
	m->b.len = len;
	if (!follow(&m->b, 0, &pos) || !tfb_table_at(&m->b, pos, &root))
		return omg_fail(err, errlen, MF, "malformed model: the root table is corrupt");
	if (!tfb_i32(&m->b, &root, 0, 0, &version) ||
	    !tfb_vec_field(&m->b, &root, 1, 4, &m->opcodes, NULL) ||
	    !tfb_vec_field(&m->b, &root, 2, 4, &subgraphs, NULL) ||
	    !tfb_vec_field(&m->b, &root, 4, 4, &m->buffers, NULL))
		return omg_fail(err, errlen, MF,
				"malformed model: the model table is truncated or corrupt");
	if (version != 3)
		return omg_fail(err, errlen, MF, "TFLite schema version %d: only 3 is supported",
				(int)version);
	if (!subgraphs.n)
		return omg_fail(err, errlen, MF, "the model has no subgraph");
	if (!tfb_vec_table(&m->b, &subgraphs, 0, &m->subgraph) ||
	    !tfb_vec_field(&m->b, &m->subgraph, 0, 4, &m->tensors, NULL) ||
	    !tfb_vec_field(&m->b, &m->subgraph, 1, 4, &m->inputs, NULL) ||
	    !tfb_vec_field(&m->b, &m->subgraph, 2, 4, &m->outputs, NULL) ||
	    !tfb_vec_field(&m->b, &m->subgraph, 3, 4, &m->operators, NULL))
		return malformed(err, errlen, "subgraph", 0);
	return OMG_OK;
}

uint32_t tfl_num_tensors(const tfl_model *m)
{
	return m->tensors.n;
}

uint32_t tfl_num_ops(const tfl_model *m)
{
	return m->operators.n;
}

/* A tensor's constant data: Buffer.data, or (offset > 1) Buffer.offset and
 * .size into the model file, as TFLite reads models over 2 GiB. */
static bool buffer_data(const tfl_model *m, uint32_t index, const uint8_t **data, size_t *len)
{
	tfb_table buf;
	tfb_vec v;
	uint64_t offset, size;

	*data = NULL;
	*len = 0;
	if (index >= m->buffers.n)
		return false;
	if (!tfb_vec_table(&m->b, &m->buffers, index, &buf) ||
	    !tfb_vec_field(&m->b, &buf, 0, 1, &v, NULL) ||
	    !tfb_u64(&m->b, &buf, 1, 0, &offset) || !tfb_u64(&m->b, &buf, 2, 0, &size))
		return false;
	if (offset > 1) {
		if (offset > m->b.len || size > m->b.len - offset)
			return false;
		if (size) {
			*data = m->b.buf + offset;
			*len = (size_t)size;
		}
		return true;
	}
	if (v.n) {
		*data = m->b.buf + v.pos;
		*len = v.n;
	}
	return true;
}

omg_status tfl_tensor_get(const tfl_model *m, uint32_t index, tfl_tensor *t,
			  char *err, size_t errlen)
{
	const tfb_buf *b = &m->b;
	tfb_table tab, q, sparsity;
	tfb_vec shape;
	int32_t buffer, external;
	uint8_t type;
	bool sparse;

	memset(t, 0, sizeof(*t));
	if (index >= m->tensors.n)
		return omg_fail(err, errlen, MF, "malformed model: tensor %u does not exist", index);
	if (!tfb_vec_table(b, &m->tensors, index, &tab) ||
	    !tfb_vec_field(b, &tab, 0, 4, &shape, NULL) ||
	    !tfb_u8(b, &tab, 1, TFL_FLOAT32, &type) ||
	    !tfb_i32(b, &tab, 2, 0, &buffer) ||
	    !tfb_table_field(b, &tab, 4, &q, &t->has_quant) ||
	    !tfb_table_field(b, &tab, 6, &sparsity, &sparse) ||
	    !tfb_i32(b, &tab, 10, 0, &external))
		return malformed(err, errlen, "tensor", index);
	if (shape.n > TFL_MAX_RANK)
		return omg_fail(err, errlen, MF, "tensor %u has rank %u: at most %d supported",
				index, shape.n, TFL_MAX_RANK);
	t->type = type;
	t->rank = shape.n;
	for (uint32_t i = 0; i < shape.n; i++)
		t->dims[i] = tfb_vec_i32(b, &shape, i);
	t->sparse = sparse;
	t->external = external != 0;
	if (t->has_quant &&
	    (!tfb_vec_field(b, &q, 2, 4, &t->scale, NULL) ||
	     !tfb_vec_field(b, &q, 3, 8, &t->zero_point, NULL) ||
	     !tfb_i32(b, &q, 6, 0, &t->quant_dim)))
		return malformed(err, errlen, "quantization of tensor", index);
	if (!buffer_data(m, (uint32_t)buffer, &t->data, &t->data_len))
		return omg_fail(err, errlen, MF, "malformed model: the buffer of tensor %u is corrupt",
				index);
	return OMG_OK;
}

omg_status tfl_op_get(const tfl_model *m, uint32_t index, tfl_op *op, char *err, size_t errlen)
{
	const tfb_buf *b = &m->b;
	tfb_table tab, code;
	int32_t opcode_index, builtin;
	uint8_t deprecated;

	memset(op, 0, sizeof(*op));
	if (!tfb_vec_table(b, &m->operators, index, &tab) ||
	    !tfb_i32(b, &tab, 0, 0, &opcode_index) ||
	    !tfb_vec_field(b, &tab, 1, 4, &op->inputs, NULL) ||
	    !tfb_vec_field(b, &tab, 2, 4, &op->outputs, NULL) ||
	    !tfb_u8(b, &tab, 3, 0, &op->options_type) ||
	    !tfb_table_field(b, &tab, 4, &op->options, &op->has_options))
		return malformed(err, errlen, "operator", index);
	if ((uint32_t)opcode_index >= m->opcodes.n)
		return omg_fail(err, errlen, MF, "malformed model: operator %u has opcode %u of %u",
				index, (uint32_t)opcode_index, m->opcodes.n);
	if (!tfb_vec_table(b, &m->opcodes, (uint32_t)opcode_index, &code) ||
	    !tfb_u8(b, &code, 0, 0, &deprecated) || !tfb_i32(b, &code, 3, 0, &builtin))
		return malformed(err, errlen, "operator code", (uint32_t)opcode_index);
	/* tflite::GetBuiltinCode: the larger of the two fields */
	op->code = builtin > (int8_t)deprecated ? builtin : (int8_t)deprecated;
	return OMG_OK;
}
