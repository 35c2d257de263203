/*
 * kernels.h - the int8 operators of the engine and the fixed-point
 * arithmetic they share, following TensorFlow Lite's reference integer
 * kernels bit for bit (tensorflow/lite/kernels/internal/reference/...,
 * common.h, quantization_util.cc, gemmlowp's fixedpoint.h).
 *
 * Layouts are TFLite's: activations NHWC, conv filters OHWI, depthwise
 * filters 1HWO, fully-connected weights [out][in]. Every kernel takes its
 * shapes and requantization parameters, already checked by the engine, in
 * one params struct; none of them allocates or fails.
 */
#ifndef OMG_KERNELS_H
#define OMG_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

/* ---- fixed-point arithmetic (one set, used by every kernel) ------------ */

/* gemmlowp::SaturatingRoundingDoublingHighMul */
int32_t omg_q_srdhm(int32_t a, int32_t b);
/* gemmlowp::RoundingDivideByPOT, 0 <= exponent <= 31 */
int32_t omg_q_rdbpot(int32_t x, int exponent);
/* tflite::MultiplyByQuantizedMultiplier (double rounding), -31 <= shift <= 31 */
int32_t omg_q_mbqm(int32_t x, int32_t multiplier, int shift);

/* std::frexp and std::round (half away from zero) on the IEEE-754 bits. */
double omg_q_frexp(double x, int *exponent);
double omg_q_round(double x);

/* tflite::QuantizeMultiplier. False if the multiplier is negative, not
 * finite, or needs a left shift of more than 31 bits. */
bool omg_q_quantize_multiplier(double m, int32_t *quantized, int *shift);

/* The range of an int8 output with a fused activation, as
 * tflite::CalculateActivationRangeQuantized (float arithmetic, roundf).
 * act: 0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6. */
void omg_q_activation_range(int act, float scale, int32_t zero_point,
			    int32_t *act_min, int32_t *act_max);

/* ---- operators --------------------------------------------------------- */

/* CONV_2D (reference_integer_ops::ConvPerChannel) and DEPTHWISE_CONV_2D
 * (reference_integer_ops::DepthwiseConvPerChannel). */
typedef struct {
	int32_t batches, in_h, in_w, in_c;
	int32_t out_h, out_w, out_c;
	int32_t k_h, k_w, k_c;		/* k_c: filter input depth (conv) */
	int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
	int32_t depth_multiplier;	/* depthwise only */
	int32_t in_offset, out_offset;	/* -input zero point, output zero point */
	int32_t act_min, act_max;
	const int8_t *filter;		/* in place in the model */
	const int32_t *bias;		/* out_c each, in the arena */
	const int32_t *mult;
	const int32_t *shift;
} omg_conv_params;

void omg_conv_s8(const omg_conv_params *p, const int8_t *in, int8_t *out);
void omg_dwconv_s8(const omg_conv_params *p, const int8_t *in, int8_t *out);

/* AVERAGE_POOL_2D (reference_integer_ops::AveragePool). Every window holds at
 * least one input element (checked by the engine). */
typedef struct {
	int32_t batches, in_h, in_w, c;
	int32_t out_h, out_w;
	int32_t k_h, k_w, stride_h, stride_w, pad_h, pad_w;
	int32_t act_min, act_max;
} omg_pool_params;

void omg_avgpool_s8(const omg_pool_params *p, const int8_t *in, int8_t *out);

/* MEAN over H and W of NHWC (reference_ops::QuantizedMeanOrSum, mean).
 * mult/shift already hold the 1/count rescaling (omg_mean_prepare). */
typedef struct {
	int32_t batches, h, w, c;
	int32_t in_zp, out_zp;
	int32_t mult, shift;
} omg_mean_params;

bool omg_mean_prepare(float in_scale, float out_scale, int64_t count,
		      int32_t *mult, int *shift);
void omg_mean_hw_s8(const omg_mean_params *p, const int8_t *in, int8_t *out);

/* FULLY_CONNECTED (reference_integer_ops::FullyConnectedPerChannel; a
 * per-tensor model has the same multiplier in every channel). */
typedef struct {
	int32_t batches, depth, out_c;
	int32_t in_offset, out_offset, act_min, act_max;
	const int8_t *weights;		/* [out_c][depth], in place */
	const int32_t *bias, *mult, *shift;
} omg_fc_params;

void omg_fc_s8(const omg_fc_params *p, const int8_t *in, int8_t *out);

/* SOFTMAX int8 -> int8 (reference_ops::Softmax, as TFLite Micro runs it). */
typedef struct {
	int32_t outer, depth;
	int32_t mult, left_shift, diff_min;
} omg_softmax_params;

/* tflite::PreprocessSoftmaxScaling and CalculateInputRadius; false if the
 * multiplier is not above one (TFLite refuses such a model too). */
bool omg_softmax_prepare(float beta, float input_scale, omg_softmax_params *p);
void omg_softmax_s8(const omg_softmax_params *p, const int8_t *in, int8_t *out);

#endif /* OMG_KERNELS_H */
