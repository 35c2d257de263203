/*
 * fmath.h - the few real functions the frontend needs, without libm.
 *
 * A TA has no math.h. These are computed in double from their series after
 * an exact range reduction; each is within a few units in the last place of
 * glibc's (tests/test_c_core.py measures it), which is far below what the
 * features' tolerance needs. Only used at init (window, mel weights, DCT,
 * twiddles) and per mel band (log), never per sample.
 */
#ifndef OMG_FMATH_H
#define OMG_FMATH_H

#include <stdint.h>

#define OMG_PI 3.14159265358979323846

double omg_log(double x);	/* x > 0, finite */
double omg_log1p(double x);	/* x > -1 */
double omg_sin(double x);	/* |x| < 2^20 */
double omg_cos(double x);
double omg_sqrt(double x);	/* x >= 0: the hardware instruction, no libm */
double omg_rint(double x);	/* round half to even (the default rounding mode) */
float omg_rintf(float x);
uint32_t omg_bit_length(uint32_t v);	/* Python's int.bit_length() */

#endif /* OMG_FMATH_H */
