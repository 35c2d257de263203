/*
 * kernels.c - the int8 operators and their fixed-point arithmetic.
 *
 * Each function names the TensorFlow Lite function it reproduces. The
 * arithmetic is theirs, bit for bit; only where TFLite relies on signed
 * overflow wrapping (accumulators, x * (1 << shift)) the same wrap is
 * spelled in unsigned arithmetic, so there is no undefined behaviour.
 * Accumulation order is free (wrapping sums are associative); rounding
 * and requantization are not, and follow TFLite exactly.
 *
 * Assumes what GCC and Clang give on every target OP-TEE runs on: two's
 * complement, arithmetic right shift of negative values, and modulo
 * conversion of out-of-range values to signed types.
 */
#include <string.h>

#include "kernels.h"

#define I32_MIN (-2147483647 - 1)
#define I32_MAX 2147483647

/* ---- fixed-point arithmetic -------------------------------------------- */

static inline int32_t wrap_add(int32_t a, int32_t b)
{
	return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t wrap_sub(int32_t a, int32_t b)
{
	return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* x * (1 << s), wrapping as TFLite's int32 multiply does; 0 <= s <= 31 */
static inline int32_t wrap_shl(int32_t x, int s)
{
	return (int32_t)((uint32_t)x << s);
}

static inline int32_t clamp32(int32_t v, int32_t lo, int32_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

int32_t omg_q_srdhm(int32_t a, int32_t b)
{
	int64_t ab;
	int64_t nudge;

	if (a == b && a == I32_MIN)
		return I32_MAX;
	ab = (int64_t)a * (int64_t)b;
	nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
	return (int32_t)((ab + nudge) / (INT64_C(1) << 31));
}

int32_t omg_q_rdbpot(int32_t x, int exponent)
{
	const int32_t mask = (int32_t)((INT64_C(1) << exponent) - 1);
	const int32_t remainder = x & mask;
	const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);

	return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* tflite::MultiplyByQuantizedMultiplier(int32_t, int32_t, int) */
int32_t omg_q_mbqm(int32_t x, int32_t multiplier, int shift)
{
	const int left = shift > 0 ? shift : 0;
	const int right = shift > 0 ? 0 : -shift;

	return omg_q_rdbpot(omg_q_srdhm(wrap_shl(x, left), multiplier), right);
}

double omg_q_frexp(double x, int *exponent)
{
	uint64_t bits;
	int biased;
	int adjust = 0;

	memcpy(&bits, &x, sizeof(bits));
	biased = (int)((bits >> 52) & 0x7ff);
	if (biased == 0x7ff || (bits << 1) == 0) {
		*exponent = 0;	/* zero, infinity, NaN: as frexp */
		return x;
	}
	if (biased == 0) {	/* subnormal: normalize first */
		x *= 18014398509481984.0;	/* 2^54 */
		memcpy(&bits, &x, sizeof(bits));
		biased = (int)((bits >> 52) & 0x7ff);
		adjust = 54;
	}
	*exponent = biased - 1022 - adjust;
	bits = (bits & ~(UINT64_C(0x7ff) << 52)) | (UINT64_C(1022) << 52);
	memcpy(&x, &bits, sizeof(x));
	return x;
}

double omg_q_round(double x)
{
	const bool neg = x < 0.0;
	double a = neg ? -x : x;
	int64_t i;

	if (!(a < 4503599627370496.0))	/* 2^52 and above (or NaN): integral */
		return x;
	i = (int64_t)a;			/* truncation */
	if (a - (double)i >= 0.5)	/* exact: same binade or i == 0 */
		i++;
	a = (double)i;
	return neg ? -a : a;
}

/* tflite::QuantizeMultiplier (quantization_util.cc), double precision */
bool omg_q_quantize_multiplier(double m, int32_t *quantized, int *shift)
{
	uint64_t bits;
	int64_t q_fixed;
	int e = 0;
	double q;

	*quantized = 0;
	*shift = 0;
	memcpy(&bits, &m, sizeof(bits));
	if ((bits << 1) == 0)		/* zero */
		return true;
	if ((bits >> 63) || ((bits >> 52) & 0x7ff) == 0x7ff)	/* negative, NaN, infinite */
		return false;
	q = omg_q_frexp(m, &e);
	q_fixed = (int64_t)omg_q_round(q * 2147483648.0);
	if (q_fixed == (INT64_C(1) << 31)) {
		q_fixed /= 2;
		e++;
	}
	if (e < -31) {
		e = 0;
		q_fixed = 0;
	}
	if (e > 31)
		return false;
	*quantized = (int32_t)q_fixed;
	*shift = e;
	return true;
}

/* the lambda of CalculateActivationRangeQuantizedImpl:
 * zero_point + static_cast<int32_t>(TfLiteRound(f / scale)), in float */
static int32_t act_quantize(float f, float scale, int32_t zero_point)
{
	const float r = f / scale;
	double q = omg_q_round((double)r);
	int64_t v;

	if (!(q > -2147483648.0))	/* also NaN */
		q = -2147483648.0;
	if (q > 2147483647.0)
		q = 2147483647.0;
	v = (int64_t)zero_point + (int64_t)q;
	return v < I32_MIN ? I32_MIN : v > I32_MAX ? I32_MAX : (int32_t)v;
}

void omg_q_activation_range(int act, float scale, int32_t zero_point,
			    int32_t *act_min, int32_t *act_max)
{
	const int32_t qmin = -128;
	const int32_t qmax = 127;
	int32_t v;

	*act_min = qmin;
	*act_max = qmax;
	if (act == 1 || act == 3) {		/* RELU, RELU6 */
		v = act_quantize(0.0f, scale, zero_point);
		*act_min = v > qmin ? v : qmin;
	}
	if (act == 3) {
		v = act_quantize(6.0f, scale, zero_point);
		*act_max = v < qmax ? v : qmax;
	}
	if (act == 2) {				/* RELU_N1_TO_1 */
		v = act_quantize(-1.0f, scale, zero_point);
		*act_min = v > qmin ? v : qmin;
		v = act_quantize(1.0f, scale, zero_point);
		*act_max = v < qmax ? v : qmax;
	}
}

/* The requantization every accumulating kernel ends with. */
static inline int8_t requant(uint32_t acc, int32_t bias, int32_t mult, int shift,
			     int32_t out_offset, int32_t act_min, int32_t act_max)
{
	int32_t v = wrap_add((int32_t)acc, bias);

	v = omg_q_mbqm(v, mult, shift);
	v = wrap_add(v, out_offset);
	return (int8_t)clamp32(v, act_min, act_max);
}

/* ---- CONV_2D: reference_integer_ops::ConvPerChannel -------------------- */

void omg_conv_s8(const omg_conv_params *p, const int8_t *in, int8_t *out)
{
	const int32_t groups = p->in_c / p->k_c;
	const int32_t per_group = p->out_c / groups;

	for (int32_t b = 0; b < p->batches; b++) {
		for (int32_t oy = 0; oy < p->out_h; oy++) {
			const int32_t iy0 = oy * p->stride_h - p->pad_h;

			for (int32_t ox = 0; ox < p->out_w; ox++) {
				const int32_t ix0 = ox * p->stride_w - p->pad_w;

				for (int32_t oc = 0; oc < p->out_c; oc++) {
					const int32_t g = oc / per_group;
					uint32_t acc = 0;

					for (int32_t ky = 0; ky < p->k_h; ky++) {
						const int32_t iy = iy0 + p->dil_h * ky;

						if (iy < 0 || iy >= p->in_h)
							continue;
						for (int32_t kx = 0; kx < p->k_w; kx++) {
							const int32_t ix = ix0 + p->dil_w * kx;
							const int8_t *ip;
							const int8_t *fp;

							if (ix < 0 || ix >= p->in_w)
								continue;
							ip = in + (((size_t)b * p->in_h + iy) * p->in_w + ix) *
								  p->in_c + (size_t)g * p->k_c;
							fp = p->filter + (((size_t)oc * p->k_h + ky) * p->k_w + kx) *
									 p->k_c;
							for (int32_t ic = 0; ic < p->k_c; ic++)
								acc += (uint32_t)((int32_t)fp[ic] *
										  ((int32_t)ip[ic] + p->in_offset));
						}
					}
					*out++ = requant(acc, p->bias[oc], p->mult[oc], p->shift[oc],
							 p->out_offset, p->act_min, p->act_max);
				}
			}
		}
	}
}

/* ---- DEPTHWISE_CONV_2D: reference_integer_ops::DepthwiseConvPerChannel -- */

void omg_dwconv_s8(const omg_conv_params *p, const int8_t *in, int8_t *out)
{
	for (int32_t b = 0; b < p->batches; b++) {
		for (int32_t oy = 0; oy < p->out_h; oy++) {
			const int32_t iy0 = oy * p->stride_h - p->pad_h;

			for (int32_t ox = 0; ox < p->out_w; ox++) {
				const int32_t ix0 = ox * p->stride_w - p->pad_w;

				for (int32_t ic = 0; ic < p->in_c; ic++) {
					for (int32_t m = 0; m < p->depth_multiplier; m++) {
						const int32_t oc = m + ic * p->depth_multiplier;
						uint32_t acc = 0;

						for (int32_t ky = 0; ky < p->k_h; ky++) {
							const int32_t iy = iy0 + p->dil_h * ky;

							if (iy < 0 || iy >= p->in_h)
								continue;
							for (int32_t kx = 0; kx < p->k_w; kx++) {
								const int32_t ix = ix0 + p->dil_w * kx;
								int32_t iv, fv;

								if (ix < 0 || ix >= p->in_w)
									continue;
								iv = in[(((size_t)b * p->in_h + iy) * p->in_w + ix) *
									p->in_c + ic];
								fv = p->filter[((size_t)ky * p->k_w + kx) * p->out_c + oc];
								acc += (uint32_t)(fv * (iv + p->in_offset));
							}
						}
						out[(((size_t)b * p->out_h + oy) * p->out_w + ox) * p->out_c + oc] =
							requant(acc, p->bias[oc], p->mult[oc], p->shift[oc],
								p->out_offset, p->act_min, p->act_max);
					}
				}
			}
		}
	}
}

/* ---- AVERAGE_POOL_2D: reference_integer_ops::AveragePool ---------------- */

void omg_avgpool_s8(const omg_pool_params *p, const int8_t *in, int8_t *out)
{
	for (int32_t b = 0; b < p->batches; b++) {
		for (int32_t oy = 0; oy < p->out_h; oy++) {
			const int32_t iy0 = oy * p->stride_h - p->pad_h;
			const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
			const int32_t fy1 = p->k_h < p->in_h - iy0 ? p->k_h : p->in_h - iy0;

			for (int32_t ox = 0; ox < p->out_w; ox++) {
				const int32_t ix0 = ox * p->stride_w - p->pad_w;
				const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
				const int32_t fx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;

				for (int32_t c = 0; c < p->c; c++) {
					int32_t acc = 0;
					int32_t count = 0;

					for (int32_t fy = fy0; fy < fy1; fy++) {
						for (int32_t fx = fx0; fx < fx1; fx++) {
							acc += in[(((size_t)b * p->in_h + iy0 + fy) * p->in_w +
								   ix0 + fx) * p->c + c];
							count++;
						}
					}
					/* count > 0: the engine refuses empty windows */
					acc = acc > 0 ? (acc + count / 2) / count
						      : (acc - count / 2) / count;
					*out++ = (int8_t)clamp32(acc, p->act_min, p->act_max);
				}
			}
		}
	}
}

/* ---- MEAN: reference_ops::QuantizedMeanOrSum (compute_sum = false) ------ */

static int clz64(uint64_t v)
{
	int n = 0;

	if (!v)
		return 64;
	while (!(v & (UINT64_C(1) << 63))) {
		v <<= 1;
		n++;
	}
	return n;
}

bool omg_mean_prepare(float in_scale, float out_scale, int64_t count,
		      int32_t *mult, int *shift)
{
	int32_t m;
	int s, k;

	/* PrepareMeanOrSum */
	if (!omg_q_quantize_multiplier((double)in_scale / (double)out_scale, &m, &s))
		return false;
	if (count <= 0)
		return false;
	/* the 1/num_elements_in_axis rescaling of QuantizedMeanOrSum */
	k = 63 - clz64((uint64_t)count);
	if (k > 32)
		k = 32;
	if (k > 31 + s)
		k = 31 + s;
	m = (int32_t)(((int64_t)m << k) / count);
	*mult = m;
	*shift = s - k;
	return *shift >= -31;
}

void omg_mean_hw_s8(const omg_mean_params *p, const int8_t *in, int8_t *out)
{
	const int64_t count = (int64_t)p->h * p->w;

	for (int32_t b = 0; b < p->batches; b++) {
		const int8_t *base = in + (size_t)b * p->h * p->w * p->c;

		for (int32_t c = 0; c < p->c; c++) {
			uint32_t sum = 0;
			int32_t v;

			for (int64_t i = 0; i < count; i++)
				sum += (uint32_t)(int32_t)base[(size_t)i * p->c + c];
			v = (int32_t)(uint32_t)((int64_t)(int32_t)sum - (int64_t)p->in_zp * count);
			v = omg_q_mbqm(v, p->mult, p->shift);
			v = wrap_add(v, p->out_zp);
			*out++ = (int8_t)clamp32(v, -128, 127);
		}
	}
}

/* ---- FULLY_CONNECTED: reference_integer_ops::FullyConnectedPerChannel --- */

void omg_fc_s8(const omg_fc_params *p, const int8_t *in, int8_t *out)
{
	for (int32_t b = 0; b < p->batches; b++) {
		const int8_t *x = in + (size_t)b * p->depth;

		for (int32_t oc = 0; oc < p->out_c; oc++) {
			const int8_t *w = p->weights + (size_t)oc * p->depth;
			uint32_t acc = 0;

			for (int32_t d = 0; d < p->depth; d++)
				acc += (uint32_t)((int32_t)w[d] * ((int32_t)x[d] + p->in_offset));
			*out++ = requant(acc, p->bias[oc], p->mult[oc], p->shift[oc],
					 p->out_offset, p->act_min, p->act_max);
		}
	}
}

/* ---- SOFTMAX: reference_ops::Softmax<int8_t, int8_t> -------------------- */

/* gemmlowp SaturatingRoundingMultiplyByPOT<e> */
static int32_t sat_rounding_mul_pot(int32_t x, int e)
{
	int32_t threshold;

	if (e == 0)
		return x;
	if (e < 0)
		return omg_q_rdbpot(x, -e);
	threshold = (int32_t)((UINT32_C(1) << (31 - e)) - 1);
	if (x > threshold)
		return I32_MAX;
	if (x < -threshold)
		return I32_MIN;
	return wrap_shl(x, e);
}

/* gemmlowp::exp_on_interval_between_negative_one_quarter_and_0_excl, Q0.31 */
static int32_t exp_quarter(int32_t a)
{
	const int32_t constant_term = 1895147668;	/* exp(-1/8) */
	const int32_t one_third = 715827883;
	const int32_t x = wrap_add(a, 1 << 28);		/* a + 1/8 */
	const int32_t x2 = omg_q_srdhm(x, x);
	const int32_t x3 = omg_q_srdhm(x2, x);
	const int32_t x4 = omg_q_srdhm(x2, x2);
	const int32_t x4_over_4 = sat_rounding_mul_pot(x4, -2);
	const int32_t poly = sat_rounding_mul_pot(
		wrap_add(omg_q_srdhm(wrap_add(x4_over_4, x3), one_third), x2), -1);

	return wrap_add(constant_term, omg_q_srdhm(constant_term, wrap_add(x, poly)));
}

/* gemmlowp::exp_on_negative_values for Q5.26 input, Q0.31 output */
static int32_t exp_on_negative_q5(int32_t a)
{
	static const int32_t mults[7] = {
		1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242
	};
	const int frac_bits = 26;
	const int32_t quarter = 1 << (frac_bits - 2);
	const int32_t a_mod = wrap_sub(a & (quarter - 1), quarter);
	const int32_t remainder = wrap_sub(a_mod, a);
	int32_t result = exp_quarter(sat_rounding_mul_pot(a_mod, 5));	/* Rescale<0> */

	for (int k = 0; k < 7; k++) {	/* exponents -2 .. +4 */
		if (remainder & (INT32_C(1) << (frac_bits - 2 + k)))
			result = omg_q_srdhm(result, mults[k]);
	}
	return a == 0 ? I32_MAX : result;
}

/* gemmlowp RoundingHalfSum for int32 */
static int32_t rounding_half_sum(int32_t a, int32_t b)
{
	const int64_t sum = (int64_t)a + (int64_t)b;
	const int64_t sign = sum >= 0 ? 1 : -1;

	return (int32_t)((sum + sign) / 2);
}

/* gemmlowp::one_over_one_plus_x_for_x_in_0_1, Q0.31 */
static int32_t one_over_one_plus_x(int32_t a)
{
	const int32_t half_denominator = rounding_half_sum(a, I32_MAX);
	const int32_t c48_17 = 1515870810;	/* Q2.29 */
	const int32_t cneg32_17 = -1010580540;
	const int32_t one_q2 = 1 << 29;
	int32_t x = wrap_add(c48_17, omg_q_srdhm(half_denominator, cneg32_17));

	for (int i = 0; i < 3; i++) {
		const int32_t hdx = omg_q_srdhm(half_denominator, x);
		const int32_t one_minus = wrap_sub(one_q2, hdx);

		x = wrap_add(x, sat_rounding_mul_pot(omg_q_srdhm(x, one_minus), 2));
	}
	return sat_rounding_mul_pot(x, 1);	/* Rescale<0>(ExactMulByPot<-1>(x)) */
}

static int clz32(uint32_t v)
{
	int n = 0;

	if (!v)
		return 32;
	while (!(v & UINT32_C(0x80000000))) {
		v <<= 1;
		n++;
	}
	return n;
}

bool omg_softmax_prepare(float beta, float input_scale, omg_softmax_params *p)
{
	const double max_real = (double)(INT64_C(1) << 31) - 1.0;
	double real = (double)beta * (double)input_scale * (double)(1 << 26);
	double radius;
	int32_t q;
	int shift;

	if (real > max_real)
		real = max_real;
	if (!(real > 1.0))	/* QuantizeMultiplierGreaterThanOne */
		return false;
	if (!omg_q_quantize_multiplier(real, &q, &shift) || shift < 0)
		return false;
	/* CalculateInputRadius(5, shift, 31): floor of a positive value */
	radius = 1.0 * ((1 << 5) - 1) * (double)(INT64_C(1) << 26) /
		 (double)(INT64_C(1) << shift);
	p->mult = q;
	p->left_shift = shift;
	p->diff_min = -(int32_t)radius;
	return true;
}

void omg_softmax_s8(const omg_softmax_params *p, const int8_t *in, int8_t *out)
{
	for (int32_t i = 0; i < p->outer; i++) {
		const int8_t *x = in + (size_t)i * p->depth;
		int8_t *y = out + (size_t)i * p->depth;
		int32_t max_in_row = -128;
		int32_t sum_of_exps = 0;	/* Q12.19 */
		int32_t shifted_scale;
		int headroom, num_bits_over_unit, exponent;

		for (int32_t c = 0; c < p->depth; c++)
			max_in_row = x[c] > max_in_row ? x[c] : max_in_row;
		for (int32_t c = 0; c < p->depth; c++) {
			const int32_t diff = (int32_t)x[c] - max_in_row;

			if (diff >= p->diff_min) {
				const int32_t scaled = omg_q_srdhm(wrap_shl(diff, p->left_shift),
								    p->mult);

				sum_of_exps = wrap_add(sum_of_exps,
						       omg_q_rdbpot(exp_on_negative_q5(scaled), 12));
			}
		}
		/* GetReciprocal(sum_of_exps, 12, &num_bits_over_unit); the row's
		 * maximum alone gives 2^19, so the sum is positive */
		headroom = clz32((uint32_t)sum_of_exps);
		num_bits_over_unit = 12 - headroom;
		shifted_scale = one_over_one_plus_x(
			(int32_t)(((uint32_t)sum_of_exps << headroom) - UINT32_C(0x80000000)));
		exponent = num_bits_over_unit + 31 - 8;
		for (int32_t c = 0; c < p->depth; c++) {
			const int32_t diff = (int32_t)x[c] - max_in_row;
			int32_t v = -128;

			if (diff >= p->diff_min) {
				const int32_t scaled = omg_q_srdhm(wrap_shl(diff, p->left_shift),
								    p->mult);
				const int32_t e = exp_on_negative_q5(scaled);

				v = omg_q_rdbpot(omg_q_srdhm(shifted_scale, e), exponent) - 128;
			}
			y[c] = (int8_t)clamp32(v, -128, 127);
		}
	}
}
