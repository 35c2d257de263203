/*
 * fmath.c - log, log1p, sin, cos, sqrt and rint without libm (see fmath.h).
 *
 * The reductions are the classic ones of fdlibm (Sun, 1993): an exact split
 * of x into a power of two and a mantissa near 1 for log, and a three-part
 * Cody-Waite subtraction of multiples of pi/2 for sin and cos. The series
 * after them are written here, evaluated by Horner's rule in double.
 */
#include <string.h>

#include "fmath.h"

static uint64_t bits_of(double x)
{
	uint64_t u;

	memcpy(&u, &x, sizeof(u));
	return u;
}

static double double_of(uint64_t u)
{
	double x;

	memcpy(&x, &u, sizeof(x));
	return x;
}

/* ln 2 split so that e * LN2_HI is exact for |e| < 2^11 */
static const double LN2_HI = 6.93147180369123816490e-01;
static const double LN2_LO = 1.90821492927058770002e-10;

double omg_log(double x)
{
	uint64_t u = bits_of(x);
	int e = (int)((u >> 52) & 0x7ff);
	double m, s, s2, p;

	if (e == 0) { /* subnormal: scale into the normal range first */
		x *= 18014398509481984.0; /* 2^54 */
		u = bits_of(x);
		e = (int)((u >> 52) & 0x7ff) - 54;
	}
	e -= 1023;
	m = double_of((u & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL); /* [1, 2) */
	if (m > 1.41421356237309504880) {
		m *= 0.5;
		e += 1;
	}
	/* log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716 */
	s = (m - 1.0) / (m + 1.0);
	s2 = s * s;
	p = 1.0 / 25;
	for (int k = 11; k >= 0; k--)
		p = 1.0 / (2 * k + 1) + s2 * p;
	return (double)e * LN2_HI + ((double)e * LN2_LO + 2.0 * s * p);
}

double omg_log1p(double x)
{
	double u = 1.0 + x;

	if (u == 1.0)
		return x;
	/* log(u) * x / (u - 1): the rounding of 1 + x cancels out (Goldberg) */
	return omg_log(u) * (x / (u - 1.0));
}

/* pi/2 in three parts of 33 bits: k * part is exact for |k| < 2^20 */
static const double PIO2_1 = 1.57079632673412561417e+00;
static const double PIO2_2 = 6.07710050630396597660e-11;
static const double PIO2_3 = 2.02226624871116645580e-21;
static const double TWO_OVER_PI = 6.36619772367581382433e-01;

static double sin_poly(double r)
{
	double r2 = r * r, p = 0.0;

	/* Taylor to r^23; |r| <= pi/4 */
	for (int n = 23; n >= 3; n -= 2) {
		double f = 1.0;

		for (int i = 2; i <= n; i++)
			f *= i;
		p = ((n % 4 == 3) ? -1.0 : 1.0) / f + r2 * p;
	}
	return r + r * r2 * p;
}

static double cos_poly(double r)
{
	double r2 = r * r, p = 0.0;

	for (int n = 22; n >= 2; n -= 2) {
		double f = 1.0;

		for (int i = 2; i <= n; i++)
			f *= i;
		p = ((n % 4 == 2) ? -1.0 : 1.0) / f + r2 * p;
	}
	return 1.0 + r2 * p;
}

static double reduce(double x, int *quadrant)
{
	double k = omg_rint(x * TWO_OVER_PI);

	*quadrant = (int)((int64_t)k & 3);
	return ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
}

double omg_sin(double x)
{
	int q;
	double r = reduce(x, &q);

	switch (q) {
	case 0:
		return sin_poly(r);
	case 1:
		return cos_poly(r);
	case 2:
		return -sin_poly(r);
	default:
		return -cos_poly(r);
	}
}

double omg_cos(double x)
{
	int q;
	double r = reduce(x, &q);

	switch (q) {
	case 0:
		return cos_poly(r);
	case 1:
		return -sin_poly(r);
	case 2:
		return -cos_poly(r);
	default:
		return sin_poly(r);
	}
}

double omg_sqrt(double x)
{
	/* with -fno-math-errno this is the sqrtsd / fsqrt instruction, correctly
	 * rounded; `make check` proves no sqrt symbol is imported */
	return __builtin_sqrt(x);
}

double omg_rint(double x)
{
	const double two52 = 4503599627370496.0;

	if (!(x < two52 && x > -two52))
		return x; /* already an integer (or NaN) */
	if (x >= 0)
		return (x + two52) - two52;
	return -((-x + two52) - two52);
}

float omg_rintf(float x)
{
	const float two23 = 8388608.0f;

	if (!(x < two23 && x > -two23))
		return x;
	if (x >= 0)
		return (x + two23) - two23;
	return -((-x + two23) - two23);
}

uint32_t omg_bit_length(uint32_t v)
{
	uint32_t n = 0;

	while (v) {
		n++;
		v >>= 1;
	}
	return n;
}
