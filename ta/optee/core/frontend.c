/*
 * frontend.c - MFCC 49x10 and log-mel 49x40 features, as omg_ta.frontend.
 *
 * The same maths as the numpy frontend the model was trained on (which
 * follows tf.signal): periodic Hann window, magnitude of the real FFT
 * zero-padded to a power of two, HTK mel filterbank (triangles between
 * linearly spaced mel edges, no weight on the DC bin), log(max(mel + offset, floor)),
 * and for MFCC the DCT-II scaled as tf.signal's mfccs_from_log_mel. Double
 * inside, float out. Window, twiddles, mel weights and the DCT matrix are
 * computed once, at init, with fmath.c (no libm); each clip then costs one
 * real FFT per frame, the mel sums over each band's own bins (the filterbank
 * is sparse: every bin feeds at most two bands), a log per band and the DCT.
 */
#include <string.h>

#include "fmath.h"
#include "omg_core.h"

#define MAX_FFT 4096
#define MAX_MEL 128
#define MAX_CLIP (4 * OMG_CLIP_SAMPLES)

struct omg_frontend {
	omg_fe_settings s;
	omg_fe_plan p;
	int32_t half;		/* fft_length / 2: the complex FFT's size */
	int32_t n_bins;		/* fft_length / 2 + 1 */
	double *window;		/* [window_samples] */
	double *tw_re, *tw_im;	/* [half]: stage by stage, e^(-2 pi i k / len), k < len/2 */
	double *post_re, *post_im; /* [half]: e^(-2 pi i k / fft_length) */
	uint16_t *bitrev;	/* [half] */
	int32_t *mel_first;	/* [num_mel_bins]: first bin with weight */
	int32_t *mel_count;	/* [num_mel_bins] */
	int32_t *mel_offset;	/* [num_mel_bins]: into mel_w */
	double *mel_w;		/* the nonzero weights, band by band */
	double *dct;		/* [num_mel_bins * num_coefficients], or NULL */
	double *re, *im;	/* scratch [half] each: the packed complex signal */
	int32_t last_bin;	/* the highest bin any mel band uses */
	double *mag;		/* scratch [n_bins] */
	double *logmel;		/* scratch [num_mel_bins] */
};

static double hz_to_mel(double hz)
{
	return 1127.0 * omg_log1p(hz / 700.0);
}

/* numpy.linspace(start, stop, num)[i]: i * step + start, the last exactly stop */
static double linspace(double start, double stop, int32_t num, int32_t i)
{
	double step;

	if (num < 2)
		return start;
	if (i == num - 1)
		return stop;
	step = (stop - start) / (double)(num - 1);
	return (double)i * step + start;
}

static size_t align16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/* The weight of bin k in mel band b (0 outside the triangle). */
static double mel_weight(const omg_fe_settings *s, int32_t n_bins, int32_t b, int32_t k)
{
	double lo = hz_to_mel(s->lower_hz), hi = hz_to_mel(s->upper_hz);
	double l = linspace(lo, hi, s->num_mel_bins + 2, b);
	double c = linspace(lo, hi, s->num_mel_bins + 2, b + 1);
	double u = linspace(lo, hi, s->num_mel_bins + 2, b + 2);
	double m = hz_to_mel(linspace(0.0, s->sample_rate / 2.0, n_bins, k));
	double up = (m - l) / (c - l), down = (u - m) / (u - c);
	double w = up < down ? up : down;

	return w > 0.0 ? w : 0.0;
}

/* Band b's bins, from its first to its last nonzero weight (count 0: none). */
static void mel_band(const omg_fe_settings *s, int32_t n_bins, int32_t b, int32_t *first,
		     int32_t *count)
{
	int32_t lo = -1, hi = -1;

	for (int32_t k = 1; k < n_bins; k++) {
		if (mel_weight(s, n_bins, b, k) > 0.0) {
			if (lo < 0)
				lo = k;
			hi = k;
		}
	}
	*first = lo < 0 ? 0 : lo;
	*count = lo < 0 ? 0 : hi - lo + 1;
}

/* The bins of every band's span, all bands. */
static int32_t mel_span(const omg_fe_settings *s, int32_t n_bins)
{
	int32_t total = 0, first, count;

	for (int32_t b = 0; b < s->num_mel_bins; b++) {
		mel_band(s, n_bins, b, &first, &count);
		total += count;
	}
	return total;
}

omg_status omg_frontend_plan(const omg_fe_settings *s, omg_fe_plan *p, char *err, size_t errlen)
{
	int32_t n_bins, half, nz;
	size_t bytes;

	memset(p, 0, sizeof(*p));
	if (s->kind != OMG_FE_MFCC && s->kind != OMG_FE_LOGMEL)
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "feature kind must be mfcc (0) or logmel (1), got %d",
				(int)s->kind);
	if (s->sample_rate <= 0 || s->sample_rate > 192000 || s->clip_ms <= 0 || s->clip_ms > 10000)
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "sample rate or clip length out of range");
	if (!(s->lower_hz > 0 && s->lower_hz < s->upper_hz && s->upper_hz <= s->sample_rate / 2.0))
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "need 0 < lower_hz < upper_hz <= sample_rate/2");
	if (!(s->window_ms > 0 && s->window_ms < 1e6 && s->hop_ms > 0 && s->hop_ms < 1e6) ||
	    !(s->log_offset >= 0 && s->log_offset < 1e30) || !(s->log_floor >= 0 && s->log_floor < 1e30))
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "window, hop, log offset or log floor out of range");
	if (!(s->log_offset > 0 || s->log_floor > 0))
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "need log_offset > 0 or log_floor > 0: the log of digital silence");
	if (s->num_mel_bins < 1 || s->num_mel_bins > MAX_MEL)
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "num_mel_bins must be 1..%d", MAX_MEL);
	/* the same integer arithmetic as FrontendSettings' derived sizes */
	p->clip_samples = (int32_t)(((int64_t)s->sample_rate * s->clip_ms) / 1000);
	p->window_samples = (int32_t)omg_rint((double)s->sample_rate * s->window_ms / 1000.0);
	p->hop_samples = (int32_t)omg_rint((double)s->sample_rate * s->hop_ms / 1000.0);
	if (p->clip_samples > MAX_CLIP)
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "clips of more than %d samples", MAX_CLIP);
	if (p->window_samples < 1 || p->window_samples > p->clip_samples || p->hop_samples <= 0)
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "window must fit in a clip and hop must be positive");
	if (s->kind == OMG_FE_MFCC && !(s->num_coefficients > 0 && s->num_coefficients <= s->num_mel_bins))
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "need 0 < num_coefficients <= num_mel_bins");
	p->fft_length = (int32_t)(1u << omg_bit_length((uint32_t)p->window_samples - 1));
	if (p->fft_length < 4 || p->fft_length > MAX_FFT)
		return omg_fail(err, errlen, OMG_RESULT_CONFIG, "FFT length %d outside 4..%d",
				(int)p->fft_length, MAX_FFT);
	p->num_frames = 1 + (p->clip_samples - p->window_samples) / p->hop_samples;
	p->num_features = s->kind == OMG_FE_MFCC ? s->num_coefficients : s->num_mel_bins;
	half = p->fft_length / 2;
	n_bins = half + 1;
	nz = mel_span(s, n_bins);
	bytes = align16(sizeof(struct omg_frontend));
	bytes += align16(sizeof(double) * (size_t)p->window_samples);
	bytes += 2 * align16(sizeof(double) * (size_t)half);
	bytes += 2 * align16(sizeof(double) * (size_t)half);
	bytes += align16(sizeof(uint16_t) * (size_t)half);
	bytes += 3 * align16(sizeof(int32_t) * (size_t)s->num_mel_bins);
	bytes += align16(sizeof(double) * (size_t)(nz + 1));
	if (s->kind == OMG_FE_MFCC)
		bytes += align16(sizeof(double) * (size_t)s->num_mel_bins * (size_t)s->num_coefficients);
	bytes += 2 * align16(sizeof(double) * (size_t)half);
	bytes += align16(sizeof(double) * (size_t)n_bins);
	bytes += align16(sizeof(double) * (size_t)s->num_mel_bins);
	p->state_bytes = bytes;
	return OMG_OK;
}

static void *take(uint8_t **cursor, size_t n)
{
	void *at = *cursor;

	*cursor += align16(n);
	return at;
}

omg_status omg_frontend_init(omg_frontend **out, const omg_fe_settings *s, void *mem, size_t mem_len,
			     char *err, size_t errlen)
{
	omg_fe_plan p;
	omg_status st = omg_frontend_plan(s, &p, err, errlen);
	struct omg_frontend *f;
	uint8_t *cur = mem;
	int32_t half, n_bins, nm, bits, nz = 0;

	if (st)
		return st;
	if (!mem || ((uintptr_t)mem & 15) || mem_len < p.state_bytes)
		return omg_fail(err, errlen, OMG_RESULT_OUT_OF_MEMORY, "the frontend needs %zu bytes, 16-aligned",
				p.state_bytes);
	half = p.fft_length / 2;
	n_bins = half + 1;
	nm = s->num_mel_bins;
	f = take(&cur, sizeof(*f));
	memset(f, 0, sizeof(*f));
	f->s = *s;
	f->p = p;
	f->half = half;
	f->n_bins = n_bins;
	f->window = take(&cur, sizeof(double) * (size_t)p.window_samples);
	f->tw_re = take(&cur, sizeof(double) * (size_t)half);
	f->tw_im = take(&cur, sizeof(double) * (size_t)half);
	f->post_re = take(&cur, sizeof(double) * (size_t)half);
	f->post_im = take(&cur, sizeof(double) * (size_t)half);
	f->bitrev = take(&cur, sizeof(uint16_t) * (size_t)half);
	f->mel_first = take(&cur, sizeof(int32_t) * (size_t)nm);
	f->mel_count = take(&cur, sizeof(int32_t) * (size_t)nm);
	f->mel_offset = take(&cur, sizeof(int32_t) * (size_t)nm);
	f->mel_w = take(&cur, sizeof(double) * (size_t)(mel_span(s, n_bins) + 1));
	if (s->kind == OMG_FE_MFCC)
		f->dct = take(&cur, sizeof(double) * (size_t)nm * (size_t)s->num_coefficients);
	f->re = take(&cur, sizeof(double) * (size_t)half);
	f->im = take(&cur, sizeof(double) * (size_t)half);
	f->mag = take(&cur, sizeof(double) * (size_t)n_bins);
	f->logmel = take(&cur, sizeof(double) * (size_t)nm);

	/* periodic Hann: 0.5 - 0.5 cos(2 pi n / N), as numpy evaluates it */
	for (int32_t n = 0; n < p.window_samples; n++)
		f->window[n] = 0.5 - 0.5 * omg_cos(2.0 * OMG_PI * (double)n / (double)p.window_samples);
	/* the twiddles of each stage of size len, contiguous: tw[len/2 - 1 + k] */
	for (int32_t len = 2; len <= half; len <<= 1) {
		for (int32_t k = 0; k < len / 2; k++) {
			double a = -2.0 * OMG_PI * (double)k / (double)len;

			f->tw_re[len / 2 - 1 + k] = omg_cos(a);
			f->tw_im[len / 2 - 1 + k] = omg_sin(a);
		}
	}
	for (int32_t k = 0; k < half; k++) {
		double a = -2.0 * OMG_PI * (double)k / (double)p.fft_length;

		f->post_re[k] = omg_cos(a);
		f->post_im[k] = omg_sin(a);
	}
	bits = (int32_t)omg_bit_length((uint32_t)half) - 1;
	for (int32_t i = 0; i < half; i++) {
		uint32_t r = 0;

		for (int32_t b = 0; b < bits; b++)
			r |= (((uint32_t)i >> b) & 1u) << (bits - 1 - b);
		f->bitrev[i] = (uint16_t)r;
	}
	/* HTK mel triangles (tf.signal.linear_to_mel_weight_matrix): each band keeps
	 * the bins from its first to its last nonzero weight */
	for (int32_t b = 0; b < nm; b++) {
		f->mel_offset[b] = nz;
		mel_band(s, n_bins, b, &f->mel_first[b], &f->mel_count[b]);
		for (int32_t i = 0; i < f->mel_count[b]; i++)
			f->mel_w[nz + i] = mel_weight(s, n_bins, b, f->mel_first[b] + i);
		nz += f->mel_count[b];
		if (f->mel_count[b] && f->mel_first[b] + f->mel_count[b] - 1 > f->last_bin)
			f->last_bin = f->mel_first[b] + f->mel_count[b] - 1;
	}
	if (f->dct) {
		/* 2 cos(pi k (2i + 1) / 2n) / sqrt(2n), as omg_ta.frontend.dct_matrix */
		int32_t nc = s->num_coefficients;

		for (int32_t i = 0; i < nm; i++)
			for (int32_t k = 0; k < nc; k++)
				f->dct[i * nc + k] = 2.0 * omg_cos(OMG_PI * (double)k * (double)(2 * i + 1) /
								  (2.0 * (double)nm)) /
						     omg_sqrt(2.0 * (double)nm);
	}
	*out = f;
	return OMG_OK;
}

/*
 * In-place iterative radix-2 complex FFT of size half, on split real and
 * imaginary arrays already in bit-reversed order. Each stage's twiddles are
 * contiguous, so the inner loop over k runs on unit-stride arrays (the
 * compiler vectorizes it); the first two stages need no multiplication.
 */
static void fft(const struct omg_frontend *f, double *restrict re, double *restrict im)
{
	int32_t n = f->half;

	for (int32_t i = 0; i < n; i += 2) { /* len 2: w = 1 */
		double ar = re[i], ai = im[i], br = re[i + 1], bi = im[i + 1];

		re[i] = ar + br;
		im[i] = ai + bi;
		re[i + 1] = ar - br;
		im[i + 1] = ai - bi;
	}
	if (n >= 4) {
		for (int32_t i = 0; i < n; i += 4) { /* len 4: w = 1, -i */
			double ar = re[i], ai = im[i], br = re[i + 2], bi = im[i + 2];
			double cr = re[i + 1], ci = im[i + 1], dr = im[i + 3], di = -re[i + 3];

			re[i] = ar + br;
			im[i] = ai + bi;
			re[i + 2] = ar - br;
			im[i + 2] = ai - bi;
			re[i + 1] = cr + dr;
			im[i + 1] = ci + di;
			re[i + 3] = cr - dr;
			im[i + 3] = ci - di;
		}
	}
	for (int32_t len = 8; len <= n; len <<= 1) {
		int32_t h = len / 2;
		const double *restrict wr = &f->tw_re[h - 1], *restrict wi = &f->tw_im[h - 1];

		for (int32_t start = 0; start < n; start += len) {
			double *restrict ar = &re[start], *restrict ai = &im[start];
			double *restrict br = &re[start + h], *restrict bi = &im[start + h];

			for (int32_t k = 0; k < h; k++) {
				double tr = br[k] * wr[k] - bi[k] * wi[k];
				double ti = br[k] * wi[k] + bi[k] * wr[k];

				br[k] = ar[k] - tr;
				bi[k] = ai[k] - ti;
				ar[k] += tr;
				ai[k] += ti;
			}
		}
	}
}

omg_status omg_frontend_run(omg_frontend *f, const int16_t *clip, float *features)
{
	const omg_fe_plan *p = &f->p;
	int32_t half = f->half, nm = f->s.num_mel_bins;

	for (int32_t t = 0; t < p->num_frames; t++) {
		const int16_t *x = clip + (size_t)t * (size_t)p->hop_samples;
		double *re = f->re, *im = f->im;
		int32_t wlen = p->window_samples;

		/* the real frame, windowed and zero-padded to fft_length, packed as half
		 * complex values z[n] = x[2n] + i x[2n+1], straight into bit-reversed order */
		for (int32_t n = 0; n < half; n++) {
			int32_t j = f->bitrev[n];

			re[j] = 2 * n < wlen ? ((double)((float)x[2 * n] / 32768.0f)) * f->window[2 * n] : 0.0;
			im[j] = 2 * n + 1 < wlen ? ((double)((float)x[2 * n + 1] / 32768.0f)) * f->window[2 * n + 1] : 0.0;
		}
		fft(f, re, im);
		/* the real FFT's bins 0..last_bin: X[k] = E[k] + e^(-2 pi i k / L) O[k] */
		for (int32_t k = 0; k <= f->last_bin; k++) {
			int32_t k1 = k < half ? k : 0, k2 = k == 0 ? 0 : half - k;
			double ar = re[k1], ai = im[k1], br = re[k2], bi = -im[k2];
			double er = 0.5 * (ar + br), ei = 0.5 * (ai + bi);
			double or_ = 0.5 * (ai - bi), oi = -0.5 * (ar - br);
			double wr = k < half ? f->post_re[k] : -1.0, wi = k < half ? f->post_im[k] : 0.0;
			double xr = er + (or_ * wr - oi * wi), xi = ei + (or_ * wi + oi * wr);

			f->mag[k] = omg_sqrt(xr * xr + xi * xi);
		}
		for (int32_t b = 0; b < nm; b++) {
			const double *w = &f->mel_w[f->mel_offset[b]];
			const double *m = &f->mag[f->mel_first[b]];
			double acc = 0.0;

			for (int32_t i = 0; i < f->mel_count[b]; i++)
				acc += m[i] * w[i];
			acc += f->s.log_offset;
			f->logmel[b] = omg_log(acc < f->s.log_floor ? f->s.log_floor : acc);
		}
		if (!f->dct) {
			for (int32_t b = 0; b < nm; b++)
				features[(size_t)t * (size_t)nm + (size_t)b] = (float)f->logmel[b];
			continue;
		}
		for (int32_t k = 0; k < f->s.num_coefficients; k++) {
			double acc = 0.0;

			for (int32_t i = 0; i < nm; i++)
				acc += f->logmel[i] * f->dct[i * f->s.num_coefficients + k];
			features[(size_t)t * (size_t)f->s.num_coefficients + (size_t)k] = (float)acc;
		}
	}
	return OMG_OK;
}

void omg_quantize(const float *x, size_t n, float scale, int32_t zero_point, int8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		float q = omg_rintf(x[i] / scale) + (float)zero_point;

		if (!(q >= -128.0f)) /* also NaN */
			q = -128.0f;
		if (q > 127.0f)
			q = 127.0f;
		out[i] = (int8_t)q;
	}
}
