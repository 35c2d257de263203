/*
 * engine.c - the int8 engine: checks a .tflite model, plans its memory and
 * runs it with the kernels of kernels.c.
 *
 * One walk over the model's operators (walk()) does everything: it checks
 * each operator, its tensors and options against what the kernels support,
 * computes the requantization parameters as TFLite computes them, evaluates
 * the int32 shape arithmetic (SHAPE, STRIDED_SLICE, PACK) from the static
 * shapes, and records each activation buffer's lifetime. omg_engine_plan
 * walks once and plans; omg_engine_init walks once to plan, then a second
 * time writing the operators into the caller's arena.
 *
 * Arena (16-byte aligned pieces):
 *   struct omg_engine | struct omg_op[ops] | per-channel int32 bias,
 *   multiplier, shift | activations
 * Activation buffers are placed greedily, largest first, each at the lowest
 * offset where it overlaps no buffer alive at the same time (a buffer lives
 * from the operator that writes it to the last operator that reads it; the
 * model output to the end), so dead tensors' memory is reused.
 *
 * Weights stay in the model bytes, which must outlive the engine; the
 * engine holds pointers into both, so neither may move after init.
 *
 * Stack: omg_engine_plan and omg_engine_init keep the walk's state (struct
 * ws, about 3.5 KiB) in their frame; their deepest call chain, that frame
 * included, is about 6 KiB on x86-64 (omg_ta.ccore.stack_bytes measures it).
 *
 * Shape arithmetic: SHAPE, STRIDED_SLICE (1-D) and PACK (of scalars) on
 * int32 tensors are evaluated at plan time from the static shapes (constant
 * folding); they do not run at inference. RESHAPE's new shape (its shape
 * input, folded, or its options) must give its output tensor's static shape
 * exactly, and RESHAPE then copies the bytes.
 */
#include <string.h>

#include "omg_core.h"
#include "kernels.h"
#include "tflite_fb.h"

#define MF OMG_RESULT_MODEL_FORMAT
#define ENGINE_MAGIC 0x4f4d4745u	/* "OMGE" */
#define ALIGN 16u
#define MAX_SLOTS (OMG_MAX_OPS + 1)	/* each operator writes one; the input */
#define MAX_FOLDS 16			/* int32 shape tensors evaluated at plan */
#define FOLD_VALS 8
#define MAX_TENSOR_BYTES (UINT32_C(1) << 26)
#define MAX_ARENA (UINT32_C(1) << 30)
#define MAX_SPATIAL 65536		/* any height, width or channel count */
#define MAX_STEP 4096			/* stride, dilation, kernel size */
#define MAX_SOFTMAX_DEPTH 511		/* keeps TFLite's sum of exps in range */
#define NO_OP UINT32_MAX		/* opctx of the model's input or output */

enum kind { K_CONV, K_DWCONV, K_AVGPOOL, K_MEAN, K_FC, K_SOFTMAX, K_COPY };

struct omg_op {
	uint32_t kind;
	const int8_t *in;
	int8_t *out;
	union {
		omg_conv_params conv;
		omg_pool_params pool;
		omg_mean_params mean;
		omg_fc_params fc;
		omg_softmax_params softmax;
		uint32_t bytes;
	} p;
};

struct omg_engine {
	uint32_t magic;
	uint32_t num_ops;
	struct omg_op *ops;
	int8_t *input;
	const int8_t *output;
	omg_io io;
};

enum { T_NONE = 0, T_CONST, T_ACT, T_FOLDED };

struct slot {			/* one activation buffer */
	uint32_t bytes;		/* rounded up to ALIGN */
	uint32_t offset;	/* from the planner (first walk) */
	int32_t first, last;	/* operators (runtime indices) */
};

struct fold {			/* an int32 shape tensor's value */
	uint32_t rank;		/* 0 or 1 */
	uint32_t n;
	int32_t v[FOLD_VALS];
};

struct ws {
	tfl_model m;
	char *err;
	size_t errlen;
	uint8_t *arena;		/* NULL: plan only */
	uint8_t state[OMG_MAX_TENSORS];
	uint8_t ref[OMG_MAX_TENSORS];	/* its slot (T_ACT) or fold (T_FOLDED) */
	struct slot slots[MAX_SLOTS];
	uint32_t nslots;
	struct fold folds[MAX_FOLDS];
	uint32_t nfolds;
	uint32_t nrun;		/* operators that run */
	size_t params;		/* bytes of per-channel parameters */
	size_t weights;
	uint64_t macs;
	int32_t in_tensor, out_tensor;
	omg_io io;
	uint32_t in_rank;
	int32_t in_dims[OMG_MAX_DIMS];
	size_t act_bytes, off_ops, off_params, off_act, total;
};

/* An operator being checked: its number and name for messages. */
struct opctx {
	uint32_t k;
	const char *name;
	tfl_op op;
};

static size_t align_up(size_t n)
{
	return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

/* ---- tensors ----------------------------------------------------------- */

/* Element count of a tensor with every dimension at least 1; false if any
 * is not, or the tensor is larger than MAX_TENSOR_BYTES elements. */
static bool flat_size(const tfl_tensor *t, uint32_t *n)
{
	uint64_t count = 1;

	for (uint32_t i = 0; i < t->rank; i++) {
		if (t->dims[i] < 1)
			return false;
		count *= (uint64_t)t->dims[i];
		if (count > MAX_TENSOR_BYTES)
			return false;
	}
	*n = (uint32_t)count;
	return true;
}

static bool finite_f(float f)
{
	uint32_t bits;

	memcpy(&bits, &f, sizeof(bits));
	return ((bits >> 23) & 0xff) != 0xff;
}

/* The tensor an operator reads (out = false) or writes, by position. */
static omg_status op_tensor(struct ws *w, const struct opctx *c, bool out, uint32_t i,
			    int32_t *idx, tfl_tensor *t)
{
	const tfb_vec *v = out ? &c->op.outputs : &c->op.inputs;

	*idx = i < v->n ? tfb_vec_i32(&w->m.b, v, i) : -1;
	if (*idx < 0 || (uint32_t)*idx >= tfl_num_tensors(&w->m))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): %s %u names tensor %d, which does not exist",
				c->k, c->name, out ? "output" : "input", i, (int)*idx);
	return tfl_tensor_get(&w->m, (uint32_t)*idx, t, w->err, w->errlen);
}

static omg_status quant_fail(struct ws *w, const struct opctx *c, int32_t idx,
			     const char *problem)
{
	if (c->k == NO_OP)
		return omg_fail(w->err, w->errlen, MF, "the %s (tensor %d) %s", c->name, (int)idx,
				problem);
	return omg_fail(w->err, w->errlen, MF, "operator %u (%s): tensor %d %s",
			c->k, c->name, (int)idx, problem);
}

/* Per-tensor int8 quantization of an activation. */
static omg_status act_quant(struct ws *w, const struct opctx *c, int32_t idx,
			    const tfl_tensor *t, float *scale, int32_t *zp)
{
	int64_t z;

	if (t->type != TFL_INT8)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): tensor %d is %s; only INT8 activations are supported",
				c->k, c->name, (int)idx, tfl_type_name(t->type));
	if (!t->has_quant || t->scale.n != 1 || t->zero_point.n != 1)
		return quant_fail(w, c, idx, "needs one scale and one zero point");
	*scale = tfb_vec_f32(&w->m.b, &t->scale, 0);
	z = tfb_vec_i64(&w->m.b, &t->zero_point, 0);
	if (!finite_f(*scale) || !(*scale > 0.0f) || z < -128 || z > 127)
		return quant_fail(w, c, idx, "has an invalid scale or zero point");
	*zp = (int32_t)z;
	return OMG_OK;
}

/* An activation the operator reads: computed earlier, int8, per-tensor. */
static omg_status use_act(struct ws *w, const struct opctx *c, uint32_t i, int32_t *idx,
			  tfl_tensor *t, float *scale, int32_t *zp)
{
	omg_status st = op_tensor(w, c, false, i, idx, t);

	if (st)
		return st;
	if (w->state[*idx] != T_ACT)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): input tensor %d is %s", c->k, c->name, (int)*idx,
				w->state[*idx] == T_CONST ? "a constant; the engine needs it computed"
							  : "read before any operator writes it");
	st = act_quant(w, c, *idx, t, scale, zp);
	if (st)
		return st;
	w->slots[w->ref[*idx]].last = (int32_t)w->nrun;
	return OMG_OK;
}

/* The one activation the operator writes: int8, per-tensor, written once. */
static omg_status def_act(struct ws *w, const struct opctx *c, int32_t *idx, tfl_tensor *t,
			  float *scale, int32_t *zp, uint32_t *count)
{
	struct slot *s;
	omg_status st;

	if (c->op.outputs.n != 1)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u outputs, not 1",
				c->k, c->name, c->op.outputs.n);
	st = op_tensor(w, c, true, 0, idx, t);
	if (st)
		return st;
	if (w->state[*idx] != T_NONE)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): output tensor %d is a constant or written twice",
				c->k, c->name, (int)*idx);
	st = act_quant(w, c, *idx, t, scale, zp);
	if (st)
		return st;
	if (!flat_size(t, count))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): output tensor %d has no static shape of at most %u elements",
				c->k, c->name, (int)*idx, MAX_TENSOR_BYTES);
	if (w->nslots >= MAX_SLOTS)
		return omg_fail(w->err, w->errlen, MF, "more than %d activation tensors", MAX_SLOTS);
	s = &w->slots[w->nslots];
	s->bytes = (uint32_t)align_up(*count);
	s->first = (int32_t)w->nrun;
	s->last = (int32_t)w->nrun;
	w->state[*idx] = T_ACT;
	w->ref[*idx] = (uint8_t)w->nslots++;
	return OMG_OK;
}

/* Constant data of a weight or bias tensor: type, in the model, all there. */
static omg_status const_data(struct ws *w, const struct opctx *c, int32_t idx,
			     const tfl_tensor *t, int32_t type, const char *what, uint32_t *count)
{
	const size_t esz = type == TFL_INT32 ? 4 : 1;

	if (t->type != type)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s): %s tensor %d is %s, not %s",
				c->k, c->name, what, (int)idx, tfl_type_name(t->type),
				tfl_type_name(type));
	if (w->state[idx] != T_CONST || t->sparse || t->external)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): %s tensor %d is not a dense constant in the model",
				c->k, c->name, what, (int)idx);
	if (!flat_size(t, count) || t->data_len != *count * esz)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): %s tensor %d holds %zu bytes, not what its shape needs",
				c->k, c->name, what, (int)idx, t->data_len);
	return OMG_OK;
}

/* An int32 shape tensor's value: a small constant or one evaluated earlier. */
static omg_status shape_value(struct ws *w, const struct opctx *c, uint32_t i, struct fold *f)
{
	tfl_tensor t;
	int32_t idx;
	uint32_t n;
	omg_status st = op_tensor(w, c, false, i, &idx, &t);

	if (st)
		return st;
	if (w->state[idx] == T_FOLDED) {
		*f = w->folds[w->ref[idx]];
		return OMG_OK;
	}
	if (w->state[idx] != T_CONST || t.type != TFL_INT32 || t.rank > 1 || t.sparse ||
	    t.external || !flat_size(&t, &n) || n > FOLD_VALS || t.data_len != 4 * n)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): input tensor %d must be a constant int32 shape of at most %d values",
				c->k, c->name, (int)idx, FOLD_VALS);
	f->rank = t.rank;
	f->n = n;
	for (uint32_t j = 0; j < n; j++)
		f->v[j] = (int32_t)tfb_le32(t.data + 4 * j);
	return OMG_OK;
}

/* ---- options ----------------------------------------------------------- */

static omg_status options(struct ws *w, const struct opctx *c, uint8_t type)
{
	if (c->op.has_options && c->op.options_type != type)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): its options are of type %u, not %u",
				c->k, c->name, c->op.options_type, type);
	return OMG_OK;
}

/* A scalar option: the schema default if the options are absent. */
static bool opt_i32(struct ws *w, const struct opctx *c, unsigned field, int32_t def, int32_t *v)
{
	*v = def;
	return !c->op.has_options || tfb_i32(&w->m.b, &c->op.options, field, def, v);
}

static bool opt_u8(struct ws *w, const struct opctx *c, unsigned field, uint8_t def, uint8_t *v)
{
	*v = def;
	return !c->op.has_options || tfb_u8(&w->m.b, &c->op.options, field, def, v);
}

static omg_status bad_options(struct ws *w, const struct opctx *c)
{
	return omg_fail(w->err, w->errlen, MF, "operator %u (%s): its options are corrupt",
			c->k, c->name);
}

static omg_status check_activation(struct ws *w, const struct opctx *c, uint8_t act)
{
	static const char *const names[] = { "NONE", "RELU", "RELU_N1_TO_1", "RELU6",
					     "TANH", "SIGN_BIT" };

	if (act > 3)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): fused activation %s (%u) is not supported",
				c->k, c->name, act < 6 ? names[act] : "unknown", act);
	return OMG_OK;
}

/* ---- shapes and padding ------------------------------------------------ */

static omg_status need_rank(struct ws *w, const struct opctx *c, int32_t idx,
			    const tfl_tensor *t, uint32_t rank)
{
	uint32_t n;

	if (t->rank != rank || !flat_size(t, &n))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): tensor %d must have %u dimensions (it has %u)",
				c->k, c->name, (int)idx, rank, t->rank);
	for (uint32_t i = 0; i < rank; i++) {
		if (t->dims[i] > MAX_SPATIAL)
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): tensor %d has a dimension over %d",
					c->k, c->name, (int)idx, MAX_SPATIAL);
	}
	return OMG_OK;
}

/* tflite::ComputeOutSize and ComputePaddingWithOffset (its floor half is what
 * the reference kernels use). padding: 0 SAME, 1 VALID. */
static bool out_and_pad(int padding, int32_t in, int32_t k, int32_t stride, int32_t dil,
			int32_t *out, int32_t *pad)
{
	const int64_t eff = (int64_t)(k - 1) * dil + 1;
	int64_t o, total;

	if (padding == 0)
		o = ((int64_t)in + stride - 1) / stride;
	else
		o = ((int64_t)in + stride - eff) / stride;
	if (o < 1)
		return false;
	total = (o - 1) * stride + eff - in;
	*out = (int32_t)o;
	*pad = (int32_t)((total > 0 ? total : 0) / 2);
	return true;
}

static bool step_ok(int32_t v)
{
	return v >= 1 && v <= MAX_STEP;
}

/* ---- per-channel parameters -------------------------------------------- */

/* Room for n int32 values in the parameter block (NULL in the plan pass). */
static int32_t *params_take(struct ws *w, uint32_t n)
{
	int32_t *p = NULL;

	if (w->arena)
		p = (int32_t *)(void *)(w->arena + w->off_params + w->params);
	w->params += 4 * (size_t)n;
	return p;
}

/* Bias and the per-channel multipliers of CONV_2D, DEPTHWISE_CONV_2D and
 * FULLY_CONNECTED, as PopulateConvolutionQuantizationParams computes them
 * (per-tensor weights: broadcast), or, for a per-tensor FULLY_CONNECTED, as
 * GetQuantizedConvolutionMultipler does (float product of the scales). */
static omg_status channel_params(struct ws *w, const struct opctx *c, int32_t f_idx,
				 const tfl_tensor *filter, int32_t quant_dim, const tfl_tensor *bias,
				 float in_scale, float out_scale, uint32_t channels, bool fc,
				 const int32_t **pb, const int32_t **pm, const int32_t **ps)
{
	const tfb_buf *b = &w->m.b;
	const uint32_t ns = filter->has_quant ? filter->scale.n : 0;
	int32_t *vb, *vm, *vs;

	if (ns != 1 && ns != channels)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): weights tensor %d has %u scales for %u channels",
				c->k, c->name, (int)f_idx, ns, channels);
	if (ns > 1 && filter->quant_dim != quant_dim)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): weights tensor %d is quantized along dimension %d, not %d",
				c->k, c->name, (int)f_idx, (int)filter->quant_dim, (int)quant_dim);
	if (filter->zero_point.n > ns)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): weights tensor %d has more zero points than scales",
				c->k, c->name, (int)f_idx);
	for (uint32_t i = 0; i < filter->zero_point.n; i++) {
		if (tfb_vec_i64(b, &filter->zero_point, i) != 0)
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): weights tensor %d is not symmetric (zero point not 0)",
					c->k, c->name, (int)f_idx);
	}
	if (fc && ns == 1 && bias) {
		/* GetQuantizedConvolutionMultipler's check of the bias scale */
		const double prod = (double)in_scale * (double)tfb_vec_f32(b, &filter->scale, 0);
		const double bs = bias->has_quant && bias->scale.n ? tfb_vec_f32(b, &bias->scale, 0)
								   : 0.0;
		const double diff = prod > bs ? prod - bs : bs - prod;

		if (!(diff / (double)out_scale <= 0.02))
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): the bias scale does not match input x weights scales",
					c->k, c->name);
	}
	vb = params_take(w, channels);
	vm = params_take(w, channels);
	vs = params_take(w, channels);
	*pb = vb;
	*pm = vm;
	*ps = vs;
	for (uint32_t i = 0; i < channels; i++) {
		const float fs = tfb_vec_f32(b, &filter->scale, ns > 1 ? i : 0);
		double real;
		int32_t q;
		int shift;

		if (!finite_f(fs) || fs < 0.0f)
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): weights tensor %d has an invalid scale",
					c->k, c->name, (int)f_idx);
		if (fc && ns == 1)
			real = (double)(in_scale * fs) / (double)out_scale;
		else
			real = (double)in_scale * (double)fs / (double)out_scale;
		if (!omg_q_quantize_multiplier(real, &q, &shift))
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): channel %u's scale ratio cannot be requantized",
					c->k, c->name, i);
		if (vm) {
			vb[i] = bias ? (int32_t)tfb_le32(bias->data + 4 * (size_t)i) : 0;
			vm[i] = q;
			vs[i] = shift;
		}
	}
	return OMG_OK;
}

/* The optional bias (input 2): NULL if absent, else an int32 constant. */
static omg_status bias_tensor(struct ws *w, const struct opctx *c, uint32_t channels,
			      tfl_tensor *t, const tfl_tensor **bias)
{
	int32_t idx;
	uint32_t n;
	omg_status st;

	*bias = NULL;
	if (c->op.inputs.n < 3 || tfb_vec_i32(&w->m.b, &c->op.inputs, 2) < 0)
		return OMG_OK;
	st = op_tensor(w, c, false, 2, &idx, t);
	if (!st)
		st = const_data(w, c, idx, t, TFL_INT32, "bias", &n);
	if (st)
		return st;
	if (n != channels)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): bias tensor %d has %u values for %u channels",
				c->k, c->name, (int)idx, n, channels);
	*bias = t;
	return OMG_OK;
}

static struct omg_op *op_slot(struct ws *w, uint32_t kind, int32_t in_idx, int32_t out_idx)
{
	struct omg_op *o;
	uint8_t *act;

	if (!w->arena)
		return NULL;
	act = w->arena + w->off_act;
	o = (struct omg_op *)(void *)(w->arena + w->off_ops) + w->nrun;
	o->kind = kind;
	o->in = (const int8_t *)(act + w->slots[w->ref[in_idx]].offset);
	o->out = (int8_t *)(act + w->slots[w->ref[out_idx]].offset);
	return o;
}

/* ---- CONV_2D, DEPTHWISE_CONV_2D ---------------------------------------- */

static omg_status op_conv(struct ws *w, const struct opctx *c, bool dw)
{
	omg_conv_params p;
	tfl_tensor in, filter, bias_t, out;
	const tfl_tensor *bias;
	int32_t in_idx, f_idx, out_idx, in_zp, out_zp, oh, ow, stride_w, stride_h, dil_w, dil_h;
	int32_t dm = 1;
	float in_scale, out_scale;
	uint32_t n;
	uint8_t padding = 0, act = 0;
	struct omg_op *o;
	omg_status st;

	memset(&p, 0, sizeof(p));
	st = options(w, c, dw ? TFL_OPT_DEPTHWISE_CONV2D : TFL_OPT_CONV2D);
	if (st)
		return st;
	if (!opt_u8(w, c, 0, 0, &padding) || !opt_i32(w, c, 1, 0, &stride_w) ||
	    !opt_i32(w, c, 2, 0, &stride_h) ||
	    (dw ? !opt_i32(w, c, 3, 0, &dm) || !opt_u8(w, c, 4, 0, &act) ||
		  !opt_i32(w, c, 5, 1, &dil_w) || !opt_i32(w, c, 6, 1, &dil_h)
		: !opt_u8(w, c, 3, 0, &act) || !opt_i32(w, c, 4, 1, &dil_w) ||
		  !opt_i32(w, c, 5, 1, &dil_h)))
		return bad_options(w, c);
	st = check_activation(w, c, act);
	if (st)
		return st;
	if (padding > 1 || !step_ok(stride_w) || !step_ok(stride_h) || !step_ok(dil_w) ||
	    !step_ok(dil_h))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): padding %u, strides %d x %d or dilations %d x %d are not supported",
				c->k, c->name, padding, (int)stride_h, (int)stride_w, (int)dil_h,
				(int)dil_w);
	if (c->op.inputs.n < 2 || c->op.inputs.n > 3)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = use_act(w, c, 0, &in_idx, &in, &in_scale, &in_zp);
	if (!st)
		st = need_rank(w, c, in_idx, &in, 4);
	if (!st)
		st = op_tensor(w, c, false, 1, &f_idx, &filter);
	if (!st)
		st = const_data(w, c, f_idx, &filter, TFL_INT8, "weights", &n);
	if (!st)
		st = need_rank(w, c, f_idx, &filter, 4);
	if (!st)
		st = def_act(w, c, &out_idx, &out, &out_scale, &out_zp, &n);
	if (!st)
		st = need_rank(w, c, out_idx, &out, 4);
	if (st)
		return st;

	p.batches = in.dims[0];
	p.in_h = in.dims[1];
	p.in_w = in.dims[2];
	p.in_c = in.dims[3];
	p.out_c = out.dims[3];
	p.k_h = filter.dims[1];
	p.k_w = filter.dims[2];
	if (dw) {
		/* filter 1 x KH x KW x out_c, out_c = in_c x depth_multiplier */
		p.k_c = 1;
		p.depth_multiplier = p.out_c / p.in_c;
		if (filter.dims[0] != 1 || filter.dims[3] != p.out_c ||
		    p.out_c != p.in_c * p.depth_multiplier ||
		    (dm != 0 && dm != p.depth_multiplier))
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): weights %d x %d x %d x %d do not fit %d input and %d output channels (depth multiplier %d)",
					c->k, c->name, (int)filter.dims[0], (int)filter.dims[1],
					(int)filter.dims[2], (int)filter.dims[3], (int)p.in_c,
					(int)p.out_c, (int)dm);
	} else {
		/* filter out_c x KH x KW x k_c; groups = in_c / k_c */
		p.k_c = filter.dims[3];
		if (filter.dims[0] != p.out_c || p.in_c % p.k_c ||
		    p.out_c % (p.in_c / p.k_c))
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): weights %d x %d x %d x %d do not fit %d input and %d output channels",
					c->k, c->name, (int)filter.dims[0], (int)filter.dims[1],
					(int)filter.dims[2], (int)filter.dims[3], (int)p.in_c,
					(int)p.out_c);
	}
	if (!step_ok(p.k_h) || !step_ok(p.k_w) ||
	    !out_and_pad(padding, p.in_h, p.k_h, stride_h, dil_h, &oh, &p.pad_h) ||
	    !out_and_pad(padding, p.in_w, p.k_w, stride_w, dil_w, &ow, &p.pad_w) ||
	    out.dims[0] != p.batches || out.dims[1] != oh || out.dims[2] != ow)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): output %d x %d x %d x %d does not follow from the input, weights and padding",
				c->k, c->name, (int)out.dims[0], (int)out.dims[1], (int)out.dims[2],
				(int)out.dims[3]);
	p.out_h = oh;
	p.out_w = ow;
	p.stride_h = stride_h;
	p.stride_w = stride_w;
	p.dil_h = dil_h;
	p.dil_w = dil_w;
	st = bias_tensor(w, c, (uint32_t)p.out_c, &bias_t, &bias);
	if (!st)
		st = channel_params(w, c, f_idx, &filter, dw ? 3 : 0, bias, in_scale, out_scale,
				    (uint32_t)p.out_c, false, &p.bias, &p.mult, &p.shift);
	if (st)
		return st;
	p.in_offset = -in_zp;
	p.out_offset = out_zp;
	omg_q_activation_range(act, out_scale, out_zp, &p.act_min, &p.act_max);
	p.filter = (const int8_t *)filter.data;
	w->weights += filter.data_len;
	w->macs += (uint64_t)p.batches * (uint64_t)oh * (uint64_t)ow * (uint64_t)p.out_c *
		   (uint64_t)p.k_h * (uint64_t)p.k_w * (uint64_t)p.k_c;
	o = op_slot(w, dw ? K_DWCONV : K_CONV, in_idx, out_idx);
	if (o)
		o->p.conv = p;
	w->nrun++;
	return OMG_OK;
}

/* ---- AVERAGE_POOL_2D --------------------------------------------------- */

static omg_status op_avgpool(struct ws *w, const struct opctx *c)
{
	omg_pool_params p;
	tfl_tensor in, out;
	int32_t in_idx, out_idx, in_zp, out_zp, oh, ow, sw, sh, fw, fh;
	float in_scale, out_scale;
	uint32_t n;
	uint8_t padding, act;
	struct omg_op *o;
	omg_status st;

	memset(&p, 0, sizeof(p));
	st = options(w, c, TFL_OPT_POOL2D);
	if (st)
		return st;
	if (!opt_u8(w, c, 0, 0, &padding) || !opt_i32(w, c, 1, 0, &sw) ||
	    !opt_i32(w, c, 2, 0, &sh) || !opt_i32(w, c, 3, 0, &fw) ||
	    !opt_i32(w, c, 4, 0, &fh) || !opt_u8(w, c, 5, 0, &act))
		return bad_options(w, c);
	st = check_activation(w, c, act);
	if (st)
		return st;
	if (padding > 1 || !step_ok(sw) || !step_ok(sh) || !step_ok(fw) || !step_ok(fh) ||
	    (int64_t)fw * fh > (1 << 20))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): padding %u, strides %d x %d or window %d x %d are not supported",
				c->k, c->name, padding, (int)sh, (int)sw, (int)fh, (int)fw);
	if (c->op.inputs.n != 1)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = use_act(w, c, 0, &in_idx, &in, &in_scale, &in_zp);
	if (!st)
		st = need_rank(w, c, in_idx, &in, 4);
	if (!st)
		st = def_act(w, c, &out_idx, &out, &out_scale, &out_zp, &n);
	if (!st)
		st = need_rank(w, c, out_idx, &out, 4);
	if (st)
		return st;
	if (memcmp(&in_scale, &out_scale, sizeof(in_scale)) != 0 || in_zp != out_zp)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): input and output must be quantized alike",
				c->k, c->name);
	p.batches = in.dims[0];
	p.in_h = in.dims[1];
	p.in_w = in.dims[2];
	p.c = in.dims[3];
	p.k_h = fh;
	p.k_w = fw;
	p.stride_h = sh;
	p.stride_w = sw;
	if (!out_and_pad(padding, p.in_h, fh, sh, 1, &oh, &p.pad_h) ||
	    !out_and_pad(padding, p.in_w, fw, sw, 1, &ow, &p.pad_w) ||
	    out.dims[0] != p.batches || out.dims[1] != oh || out.dims[2] != ow ||
	    out.dims[3] != p.c)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): output %d x %d x %d x %d does not follow from the input and padding",
				c->k, c->name, (int)out.dims[0], (int)out.dims[1], (int)out.dims[2],
				(int)out.dims[3]);
	/* the reference kernel fails on a window with no input element */
	if (p.pad_h >= fh || p.pad_w >= fw ||
	    (int64_t)(oh - 1) * sh - p.pad_h >= p.in_h || (int64_t)(ow - 1) * sw - p.pad_w >= p.in_w)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): a pooling window lies wholly in the padding",
				c->k, c->name);
	p.out_h = oh;
	p.out_w = ow;
	omg_q_activation_range(act, out_scale, out_zp, &p.act_min, &p.act_max);
	o = op_slot(w, K_AVGPOOL, in_idx, out_idx);
	if (o)
		o->p.pool = p;
	w->nrun++;
	return OMG_OK;
}

/* ---- MEAN over H and W ------------------------------------------------- */

static omg_status op_mean(struct ws *w, const struct opctx *c)
{
	omg_mean_params p;
	struct fold axes;
	tfl_tensor in, out;
	int32_t in_idx, out_idx;
	float in_scale, out_scale;
	uint32_t n, mask = 0;
	uint8_t keep;
	int shift;
	struct omg_op *o;
	omg_status st;

	memset(&p, 0, sizeof(p));
	st = options(w, c, TFL_OPT_REDUCER);
	if (st)
		return st;
	if (!opt_u8(w, c, 0, 0, &keep))
		return bad_options(w, c);
	if (c->op.inputs.n != 2)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = use_act(w, c, 0, &in_idx, &in, &in_scale, &p.in_zp);
	if (!st)
		st = need_rank(w, c, in_idx, &in, 4);
	if (!st)
		st = shape_value(w, c, 1, &axes);
	if (st)
		return st;
	for (uint32_t i = 0; i < axes.n; i++) {	/* ResolveAxis */
		const int32_t a = axes.v[i] < 0 ? axes.v[i] + 4 : axes.v[i];

		if (a < 0 || a > 3) {
			mask = 0;
			break;
		}
		mask |= 1u << a;
	}
	if (mask != 6u)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): only the mean over axes 1 and 2 (height, width) of a 4-D tensor is supported",
				c->k, c->name);
	st = def_act(w, c, &out_idx, &out, &out_scale, &p.out_zp, &n);
	if (st)
		return st;
	p.batches = in.dims[0];
	p.h = in.dims[1];
	p.w = in.dims[2];
	p.c = in.dims[3];
	if (keep ? out.rank != 4 || out.dims[0] != p.batches || out.dims[1] != 1 ||
		   out.dims[2] != 1 || out.dims[3] != p.c
		 : out.rank != 2 || out.dims[0] != p.batches || out.dims[1] != p.c)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): output tensor %d does not have the shape of the mean",
				c->k, c->name, (int)out_idx);
	if (!omg_mean_prepare(in_scale, out_scale, (int64_t)p.h * p.w, &p.mult, &shift))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): the scale ratio cannot be requantized",
				c->k, c->name);
	p.shift = shift;
	o = op_slot(w, K_MEAN, in_idx, out_idx);
	if (o)
		o->p.mean = p;
	w->nrun++;
	return OMG_OK;
}

/* ---- FULLY_CONNECTED --------------------------------------------------- */

static omg_status op_fc(struct ws *w, const struct opctx *c)
{
	omg_fc_params p;
	tfl_tensor in, weights, bias_t, out;
	const tfl_tensor *bias;
	int32_t in_idx, w_idx, out_idx, in_zp, out_zp;
	float in_scale, out_scale;
	uint32_t in_n, out_n, n;
	uint8_t act, format;
	struct omg_op *o;
	omg_status st;

	memset(&p, 0, sizeof(p));
	st = options(w, c, TFL_OPT_FULLY_CONNECTED);
	if (st)
		return st;
	if (!opt_u8(w, c, 0, 0, &act) || !opt_u8(w, c, 1, 0, &format))
		return bad_options(w, c);
	st = check_activation(w, c, act);
	if (st)
		return st;
	if (format != 0)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): weights format %u is not supported (only DEFAULT)",
				c->k, c->name, format);
	if (c->op.inputs.n < 2 || c->op.inputs.n > 3)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = use_act(w, c, 0, &in_idx, &in, &in_scale, &in_zp);
	if (!st && (in.rank < 1 || !flat_size(&in, &in_n)))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): input tensor %d has no static shape",
				c->k, c->name, (int)in_idx);
	if (!st)
		st = op_tensor(w, c, false, 1, &w_idx, &weights);
	if (!st)
		st = const_data(w, c, w_idx, &weights, TFL_INT8, "weights", &n);
	if (!st)
		st = need_rank(w, c, w_idx, &weights, 2);
	if (!st)
		st = def_act(w, c, &out_idx, &out, &out_scale, &out_zp, &out_n);
	if (st)
		return st;
	p.out_c = weights.dims[0];
	p.depth = weights.dims[1];
	p.batches = (int32_t)(in_n / (uint32_t)p.depth);
	if (in_n % (uint32_t)p.depth || out.rank < 1 || out.dims[out.rank - 1] != p.out_c ||
	    out_n != (uint32_t)p.batches * (uint32_t)p.out_c)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): input of %u values, weights %d x %d and output of %u values do not fit",
				c->k, c->name, in_n, (int)p.out_c, (int)p.depth, out_n);
	st = bias_tensor(w, c, (uint32_t)p.out_c, &bias_t, &bias);
	if (!st)
		st = channel_params(w, c, w_idx, &weights, 0, bias, in_scale, out_scale,
				    (uint32_t)p.out_c, true, &p.bias, &p.mult, &p.shift);
	if (st)
		return st;
	p.in_offset = -in_zp;
	p.out_offset = out_zp;
	omg_q_activation_range(act, out_scale, out_zp, &p.act_min, &p.act_max);
	p.weights = (const int8_t *)weights.data;
	w->weights += weights.data_len;
	w->macs += (uint64_t)p.batches * (uint64_t)p.out_c * (uint64_t)p.depth;
	o = op_slot(w, K_FC, in_idx, out_idx);
	if (o)
		o->p.fc = p;
	w->nrun++;
	return OMG_OK;
}

/* ---- SOFTMAX ----------------------------------------------------------- */

static omg_status op_softmax(struct ws *w, const struct opctx *c)
{
	omg_softmax_params p;
	tfl_tensor in, out;
	int32_t in_idx, out_idx, in_zp, out_zp;
	float in_scale, out_scale, beta = 0.0f;
	uint32_t in_n, out_n;
	struct omg_op *o;
	omg_status st;

	memset(&p, 0, sizeof(p));
	st = options(w, c, TFL_OPT_SOFTMAX);
	if (st)
		return st;
	if (c->op.has_options && !tfb_f32(&w->m.b, &c->op.options, 0, 0.0f, &beta))
		return bad_options(w, c);
	if (c->op.inputs.n != 1)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = use_act(w, c, 0, &in_idx, &in, &in_scale, &in_zp);
	if (!st)
		st = def_act(w, c, &out_idx, &out, &out_scale, &out_zp, &out_n);
	if (st)
		return st;
	if (!flat_size(&in, &in_n) || in.rank < 1 || in.rank != out.rank ||
	    memcmp(in.dims, out.dims, in.rank * sizeof(in.dims[0])) != 0)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): input and output shapes differ", c->k, c->name);
	/* TFLite's int8 softmax: output scale 1/256, zero point -128 */
	if (out_zp != -128 || out_scale < 0.999f / 256 || out_scale > 1.001f / 256)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): an int8 output needs scale 1/256 and zero point -128",
				c->k, c->name);
	p.depth = in.dims[in.rank - 1];
	p.outer = (int32_t)(in_n / (uint32_t)p.depth);
	if (p.depth > MAX_SOFTMAX_DEPTH)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): %d classes: at most %d supported",
				c->k, c->name, (int)p.depth, MAX_SOFTMAX_DEPTH);
	if (!finite_f(beta) || !omg_softmax_prepare(beta, in_scale, &p))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): beta x input scale is too small to requantize",
				c->k, c->name);
	o = op_slot(w, K_SOFTMAX, in_idx, out_idx);
	if (o)
		o->p.softmax = p;
	w->nrun++;
	return OMG_OK;
}

/* ---- RESHAPE ----------------------------------------------------------- */

/* Does a new shape (one dimension may be -1) give exactly the output's? */
static bool shape_matches(const struct fold *f, const tfl_tensor *out, uint32_t count)
{
	int64_t known = 1;
	int unknown = -1;

	if (f->rank > 1 || f->n != out->rank)
		return false;
	for (uint32_t i = 0; i < f->n; i++) {
		if (f->v[i] == -1 && unknown < 0) {
			unknown = (int)i;
			continue;
		}
		if (f->v[i] < 1 || f->v[i] != out->dims[i])
			return false;
		known *= f->v[i];
	}
	if (unknown >= 0)
		return count % known == 0 && out->dims[unknown] == (int64_t)count / known;
	return known == count;
}

static omg_status op_reshape(struct ws *w, const struct opctx *c)
{
	struct fold f;
	tfl_tensor in, out;
	tfb_vec new_shape;
	int32_t in_idx, out_idx, in_zp, out_zp;
	float in_scale, out_scale;
	uint32_t in_n, out_n;
	bool have_shape = false, present;
	struct omg_op *o;
	omg_status st;

	st = options(w, c, TFL_OPT_RESHAPE);
	if (st)
		return st;
	if (c->op.inputs.n < 1 || c->op.inputs.n > 2)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = use_act(w, c, 0, &in_idx, &in, &in_scale, &in_zp);
	if (!st)
		st = def_act(w, c, &out_idx, &out, &out_scale, &out_zp, &out_n);
	if (st)
		return st;
	if (c->op.inputs.n == 2 && tfb_vec_i32(&w->m.b, &c->op.inputs, 1) >= 0) {
		/* the shape input: folded at plan time, checked against the output */
		st = shape_value(w, c, 1, &f);
		if (st)
			return st;
		have_shape = true;
	} else if (c->op.has_options) {
		if (!tfb_vec_field(&w->m.b, &c->op.options, 0, 4, &new_shape, &present))
			return bad_options(w, c);
		if (present && new_shape.n <= FOLD_VALS) {
			f.rank = 1;
			f.n = new_shape.n;
			for (uint32_t i = 0; i < f.n; i++)
				f.v[i] = tfb_vec_i32(&w->m.b, &new_shape, i);
			have_shape = true;
		}
	}
	if (!flat_size(&in, &in_n) || in_n != out_n ||
	    (have_shape && !shape_matches(&f, &out, out_n)))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): its new shape does not match output tensor %d",
				c->k, c->name, (int)out_idx);
	o = op_slot(w, K_COPY, in_idx, out_idx);
	if (o)
		o->p.bytes = out_n;
	w->nrun++;
	return OMG_OK;
}

/* ---- SHAPE, STRIDED_SLICE, PACK: evaluated at plan time ----------------- */

/* The int32 output of a folded operator: its shape must be the value's. */
static omg_status def_fold(struct ws *w, const struct opctx *c, const struct fold *f)
{
	tfl_tensor out;
	int32_t idx;
	omg_status st;

	if (c->op.outputs.n != 1)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u outputs, not 1",
				c->k, c->name, c->op.outputs.n);
	st = op_tensor(w, c, true, 0, &idx, &out);
	if (st)
		return st;
	if (w->state[idx] != T_NONE || out.type != TFL_INT32 || out.rank != f->rank ||
	    (f->rank == 1 && out.dims[0] != (int32_t)f->n))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): output tensor %d must be a new int32 tensor of %u values",
				c->k, c->name, (int)idx, f->n);
	if (w->nfolds >= MAX_FOLDS)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): more than %d shape computations", c->k, c->name,
				MAX_FOLDS);
	w->folds[w->nfolds] = *f;
	w->state[idx] = T_FOLDED;
	w->ref[idx] = (uint8_t)w->nfolds++;
	return OMG_OK;
}

static omg_status fold_shape(struct ws *w, const struct opctx *c)
{
	struct fold f;
	tfl_tensor in;
	int32_t idx;
	uint32_t n;
	omg_status st;

	if (c->op.inputs.n != 1)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = op_tensor(w, c, false, 0, &idx, &in);
	if (st)
		return st;
	if (w->state[idx] == T_NONE || in.rank > FOLD_VALS || !flat_size(&in, &n))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): input tensor %d has no static shape",
				c->k, c->name, (int)idx);
	f.rank = 1;
	f.n = in.rank;
	for (uint32_t i = 0; i < in.rank; i++)
		f.v[i] = in.dims[i];
	return def_fold(w, c, &f);
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* tflite::strided_slice::StartForAxis / StopForAxis on a 1-D tensor */
static omg_status fold_strided_slice(struct ws *w, const struct opctx *c)
{
	struct fold in, begin, end, strides, f;
	int32_t begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_mask;
	int64_t size, stride, start, stop;
	uint8_t offset;
	omg_status st;

	st = options(w, c, TFL_OPT_STRIDED_SLICE);
	if (st)
		return st;
	if (!opt_i32(w, c, 0, 0, &begin_mask) || !opt_i32(w, c, 1, 0, &end_mask) ||
	    !opt_i32(w, c, 2, 0, &ellipsis_mask) || !opt_i32(w, c, 3, 0, &new_axis_mask) ||
	    !opt_i32(w, c, 4, 0, &shrink_mask) || !opt_u8(w, c, 5, 0, &offset))
		return bad_options(w, c);
	if (c->op.inputs.n != 4)
		return omg_fail(w->err, w->errlen, MF, "operator %u (%s) has %u inputs",
				c->k, c->name, c->op.inputs.n);
	st = shape_value(w, c, 0, &in);
	if (!st)
		st = shape_value(w, c, 1, &begin);
	if (!st)
		st = shape_value(w, c, 2, &end);
	if (!st)
		st = shape_value(w, c, 3, &strides);
	if (st)
		return st;
	if (in.rank != 1 || begin.n != 1 || end.n != 1 || strides.n != 1 || ellipsis_mask ||
	    new_axis_mask || offset || strides.v[0] == 0)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): only a plain slice of a 1-D shape is supported",
				c->k, c->name);
	size = in.n;
	stride = strides.v[0];
	start = begin.v[0];
	if (begin_mask & 1)
		start = stride > 0 ? INT32_MIN : INT32_MAX;
	if (start < 0)
		start += size;
	start = stride > 0 ? clamp64(start, 0, size) : clamp64(start, -1, size - 1);
	if (shrink_mask & 1) {
		stop = start + 1;
	} else {
		stop = end.v[0];
		if (end_mask & 1)
			stop = stride > 0 ? INT32_MAX : INT32_MIN;
		if (stop < 0)
			stop += size;
		stop = stride > 0 ? clamp64(stop, 0, size) : clamp64(stop, -1, size - 1);
	}
	f.rank = (shrink_mask & 1) ? 0 : 1;
	f.n = 0;
	for (int64_t i = start; stride > 0 ? i < stop : i > stop; i += stride) {
		if (i < 0 || i >= size)
			break;
		f.v[f.n++] = in.v[i];
	}
	if ((shrink_mask & 1) && f.n != 1)
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): the shrunk slice is empty", c->k, c->name);
	return def_fold(w, c, &f);
}

static omg_status fold_pack(struct ws *w, const struct opctx *c)
{
	struct fold f, v;
	int32_t count, axis;
	omg_status st;

	st = options(w, c, TFL_OPT_PACK);
	if (st)
		return st;
	if (!opt_i32(w, c, 0, 0, &count) || !opt_i32(w, c, 1, 0, &axis))
		return bad_options(w, c);
	if (c->op.inputs.n < 1 || c->op.inputs.n > FOLD_VALS ||
	    count != (int32_t)c->op.inputs.n || (axis != 0 && axis != -1))
		return omg_fail(w->err, w->errlen, MF,
				"operator %u (%s): only packing up to %d scalars along axis 0 is supported",
				c->k, c->name, FOLD_VALS);
	f.rank = 1;
	f.n = c->op.inputs.n;
	for (uint32_t i = 0; i < f.n; i++) {
		st = shape_value(w, c, i, &v);
		if (st)
			return st;
		if (v.rank != 0 || v.n != 1)
			return omg_fail(w->err, w->errlen, MF,
					"operator %u (%s): input %u is not an int32 scalar",
					c->k, c->name, i);
		f.v[i] = v.v[0];
	}
	return def_fold(w, c, &f);
}

/* ---- the walk ---------------------------------------------------------- */

static omg_status graph_input(struct ws *w)
{
	const struct opctx c = { .k = NO_OP, .name = "model input" };
	tfl_tensor t;
	int32_t idx = tfb_vec_i32(&w->m.b, &w->m.inputs, 0);
	uint32_t n;
	omg_status st;

	if (idx < 0 || (uint32_t)idx >= tfl_num_tensors(&w->m))
		return omg_fail(w->err, w->errlen, MF, "the model input names no tensor");
	st = tfl_tensor_get(&w->m, (uint32_t)idx, &t, w->err, w->errlen);
	if (st)
		return st;
	if (t.type != TFL_INT8)
		return omg_fail(w->err, w->errlen, MF,
				"the model input (tensor %d) is %s: only int8 models are supported",
				(int)idx, tfl_type_name(t.type));
	if (w->state[idx] != T_NONE)
		return omg_fail(w->err, w->errlen, MF, "the model input (tensor %d) is a constant",
				(int)idx);
	st = act_quant(w, &c, idx, &t, &w->io.input_scale, &w->io.input_zero_point);
	if (st)
		return st;
	if (t.rank < 1 || t.rank > OMG_MAX_DIMS || !flat_size(&t, &n))
		return omg_fail(w->err, w->errlen, MF,
				"the model input (tensor %d) needs a static shape of 1 to %d dimensions",
				(int)idx, OMG_MAX_DIMS);
	w->in_tensor = idx;
	w->in_rank = t.rank;
	memcpy(w->in_dims, t.dims, t.rank * sizeof(t.dims[0]));
	w->io.input_bytes = n;
	w->slots[0].bytes = (uint32_t)align_up(n);
	w->slots[0].first = 0;
	w->slots[0].last = 0;
	w->nslots = 1;
	w->state[idx] = T_ACT;
	w->ref[idx] = 0;
	return OMG_OK;
}

static omg_status graph_output(struct ws *w)
{
	const int32_t idx = tfb_vec_i32(&w->m.b, &w->m.outputs, 0);
	const struct opctx c = { .k = NO_OP, .name = "model output" };
	tfl_tensor t;
	omg_status st;

	if (idx < 0 || (uint32_t)idx >= tfl_num_tensors(&w->m))
		return omg_fail(w->err, w->errlen, MF, "the model output names no tensor");
	st = tfl_tensor_get(&w->m, (uint32_t)idx, &t, w->err, w->errlen);
	if (st)
		return st;
	if (w->state[idx] != T_ACT || idx == w->in_tensor)
		return omg_fail(w->err, w->errlen, MF,
				"the model output (tensor %d) is %s", (int)idx,
				t.type == TFL_INT8 ? "not computed by any operator"
						   : tfl_type_name(t.type));
	st = act_quant(w, &c, idx, &t, &w->io.output_scale, &w->io.output_zero_point);
	if (st)
		return st;
	w->out_tensor = idx;
	(void)flat_size(&t, &w->io.output_bytes);	/* checked when written */
	w->slots[w->ref[idx]].last = (int32_t)w->nrun;	/* alive to the end */
	return OMG_OK;
}

static omg_status walk_op(struct ws *w, uint32_t k)
{
	struct opctx c;
	omg_status st = tfl_op_get(&w->m, k, &c.op, w->err, w->errlen);

	if (st)
		return st;
	c.k = k;
	c.name = tfl_op_name(c.op.code);
	switch (c.op.code) {
	case TFL_OP_CONV_2D:
		return op_conv(w, &c, false);
	case TFL_OP_DEPTHWISE_CONV_2D:
		return op_conv(w, &c, true);
	case TFL_OP_AVERAGE_POOL_2D:
		return op_avgpool(w, &c);
	case TFL_OP_MEAN:
		return op_mean(w, &c);
	case TFL_OP_FULLY_CONNECTED:
		return op_fc(w, &c);
	case TFL_OP_SOFTMAX:
		return op_softmax(w, &c);
	case TFL_OP_RESHAPE:
		return op_reshape(w, &c);
	case TFL_OP_SHAPE:
		return fold_shape(w, &c);
	case TFL_OP_STRIDED_SLICE:
		return fold_strided_slice(w, &c);
	case TFL_OP_PACK:
		return fold_pack(w, &c);
	default:
		return omg_fail(w->err, w->errlen, MF, "operator %u: %s (%d) is not supported",
				k, c.name, (int)c.op.code);
	}
}

static omg_status walk(struct ws *w)
{
	uint32_t nt, nops;
	omg_status st;

	w->nslots = 0;
	w->nfolds = 0;
	w->nrun = 0;
	w->params = 0;
	w->weights = 0;
	w->macs = 0;
	memset(w->state, 0, sizeof(w->state));
	memset(w->ref, 0, sizeof(w->ref));
	nt = tfl_num_tensors(&w->m);
	nops = tfl_num_ops(&w->m);
	if (nt > OMG_MAX_TENSORS || nops > OMG_MAX_OPS)
		return omg_fail(w->err, w->errlen, MF,
				"the model has %u tensors and %u operators: at most %d and %d",
				nt, nops, OMG_MAX_TENSORS, OMG_MAX_OPS);
	if (!nops)
		return omg_fail(w->err, w->errlen, MF, "the model has no operators");
	if (w->m.inputs.n != 1 || w->m.outputs.n != 1)
		return omg_fail(w->err, w->errlen, MF,
				"the model has %u inputs and %u outputs: exactly one each is supported",
				w->m.inputs.n, w->m.outputs.n);
	for (uint32_t i = 0; i < nt; i++) {	/* constants: tensors with data */
		tfl_tensor t;

		st = tfl_tensor_get(&w->m, i, &t, w->err, w->errlen);
		if (st)
			return st;
		if (t.data)
			w->state[i] = T_CONST;
	}
	st = graph_input(w);
	for (uint32_t k = 0; !st && k < nops; k++)
		st = walk_op(w, k);
	if (!st)
		st = graph_output(w);
	return st;
}

/* ---- the planner ------------------------------------------------------- */

static bool overlap_time(const struct slot *a, const struct slot *b)
{
	return a->first <= b->last && b->first <= a->last;
}

/* Greedy first fit, largest buffer first (ties: earlier first). */
static omg_status place(struct ws *w)
{
	uint8_t order[MAX_SLOTS];
	size_t top = 0;

	for (uint32_t i = 0; i < w->nslots; i++) {	/* insertion sort */
		uint32_t j = i;
		const struct slot *s = &w->slots[i];

		while (j > 0) {
			const struct slot *p = &w->slots[order[j - 1]];

			if (p->bytes > s->bytes || (p->bytes == s->bytes && p->first <= s->first))
				break;
			order[j] = order[j - 1];
			j--;
		}
		order[j] = (uint8_t)i;
	}
	for (uint32_t i = 0; i < w->nslots; i++) {
		struct slot *s = &w->slots[order[i]];
		uint64_t at = 0;
		bool moved = true;

		while (moved) {	/* the lowest offset clear of every live buffer */
			moved = false;
			for (uint32_t j = 0; j < i; j++) {
				const struct slot *p = &w->slots[order[j]];

				if (overlap_time(s, p) && at < (uint64_t)p->offset + p->bytes &&
				    at + s->bytes > p->offset) {
					at = (uint64_t)p->offset + p->bytes;
					moved = true;
				}
			}
		}
		if (at + s->bytes > MAX_ARENA)
			return omg_fail(w->err, w->errlen, MF,
					"the activations need more than %u bytes", MAX_ARENA);
		s->offset = (uint32_t)at;
		if (at + s->bytes > top)
			top = (size_t)(at + s->bytes);
	}
	w->act_bytes = top;
	return OMG_OK;
}

/* First walk, planner and layout: everything plan and init need to know. */
static omg_status analyze(struct ws *w, const uint8_t *model, size_t len)
{
	omg_status st = tfl_open(&w->m, model, len, w->err, w->errlen);

	if (!st)
		st = walk(w);
	if (!st)
		st = place(w);
	if (st)
		return st;
	w->off_ops = align_up(sizeof(struct omg_engine));
	w->off_params = w->off_ops + align_up(w->nrun * sizeof(struct omg_op));
	w->off_act = w->off_params + align_up(w->params);
	if (w->params > MAX_ARENA || w->off_act + w->act_bytes > MAX_ARENA)
		return omg_fail(w->err, w->errlen, MF, "the model needs more than %u bytes",
				MAX_ARENA);
	w->total = w->off_act + w->act_bytes;
	return OMG_OK;
}

/* ---- the API ----------------------------------------------------------- */

omg_status omg_engine_plan(const uint8_t *model, size_t len, omg_plan *plan,
			   char *err, size_t errlen)
{
	struct ws w;
	omg_status st;

	if (!plan)
		return omg_fail(err, errlen, OMG_RESULT_BAD_PARAMETERS, "no plan to fill");
	memset(plan, 0, sizeof(*plan));
	memset(&w, 0, sizeof(w));
	w.err = err;
	w.errlen = errlen;
	st = analyze(&w, model, len);
	if (st)
		return st;
	plan->arena_bytes = w.total;
	plan->activation_bytes = w.act_bytes;
	plan->scratch_bytes = w.off_act - w.off_params;
	plan->weight_bytes = w.weights;
	/* every operator of the model, the folded shape arithmetic included */
	plan->num_ops = tfl_num_ops(&w.m);
	plan->num_tensors = tfl_num_tensors(&w.m);
	plan->macs = w.macs;
	plan->input_rank = w.in_rank;
	memcpy(plan->input_dims, w.in_dims, sizeof(plan->input_dims));
	plan->output_size = w.io.output_bytes;
	return OMG_OK;
}

omg_status omg_engine_init(omg_engine **engine, const uint8_t *model, size_t len,
			   void *arena, size_t arena_len, char *err, size_t errlen)
{
	struct ws w;
	struct omg_engine *e;
	uint32_t nrun;
	size_t params;
	omg_status st;

	if (!engine || !arena)
		return omg_fail(err, errlen, OMG_RESULT_BAD_PARAMETERS, "no engine or arena given");
	*engine = NULL;
	if ((uintptr_t)arena % ALIGN)
		return omg_fail(err, errlen, OMG_RESULT_BAD_PARAMETERS,
				"the arena must be %u-byte aligned", ALIGN);
	memset(&w, 0, sizeof(w));
	w.err = err;
	w.errlen = errlen;
	st = analyze(&w, model, len);
	if (st)
		return st;
	if (arena_len < w.total)
		return omg_fail(err, errlen, OMG_RESULT_SHORT_BUFFER,
				"the arena has %zu bytes; the model needs %zu", arena_len, w.total);
	memset(arena, 0, w.total);
	nrun = w.nrun;
	params = w.params;
	w.arena = arena;
	st = walk(&w);	/* the same walk, now writing the operators */
	if (st)
		return st;
	if (w.nrun != nrun || w.params != params)
		return omg_fail(err, errlen, OMG_RESULT_GENERIC, "the second walk differs");
	e = arena;
	e->magic = ENGINE_MAGIC;
	e->num_ops = w.nrun;
	e->ops = (struct omg_op *)(void *)(w.arena + w.off_ops);
	e->input = (int8_t *)(w.arena + w.off_act + w.slots[w.ref[w.in_tensor]].offset);
	e->output = (const int8_t *)(w.arena + w.off_act + w.slots[w.ref[w.out_tensor]].offset);
	e->io = w.io;
	*engine = e;
	return OMG_OK;
}

void omg_engine_io(const omg_engine *e, omg_io *io)
{
	if (!io)
		return;
	memset(io, 0, sizeof(*io));
	if (e && e->magic == ENGINE_MAGIC)
		*io = e->io;
}

omg_status omg_engine_invoke(omg_engine *e, const int8_t *input, int8_t *output)
{
	if (!e || !input || !output || e->magic != ENGINE_MAGIC)
		return OMG_RESULT_BAD_PARAMETERS;
	memcpy(e->input, input, e->io.input_bytes);
	for (uint32_t i = 0; i < e->num_ops; i++) {
		const struct omg_op *o = &e->ops[i];

		switch (o->kind) {
		case K_CONV:
			omg_conv_s8(&o->p.conv, o->in, o->out);
			break;
		case K_DWCONV:
			omg_dwconv_s8(&o->p.conv, o->in, o->out);
			break;
		case K_AVGPOOL:
			omg_avgpool_s8(&o->p.pool, o->in, o->out);
			break;
		case K_MEAN:
			omg_mean_hw_s8(&o->p.mean, o->in, o->out);
			break;
		case K_FC:
			omg_fc_s8(&o->p.fc, o->in, o->out);
			break;
		case K_SOFTMAX:
			omg_softmax_s8(&o->p.softmax, o->in, o->out);
			break;
		case K_COPY:
			memmove(o->out, o->in, o->p.bytes);
			break;
		default:
			return OMG_RESULT_BAD_STATE;
		}
	}
	memcpy(output, e->output, e->io.output_bytes);
	return OMG_OK;
}
