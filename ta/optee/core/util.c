/*
 * util.c - the one formatter the core has: a line into an error buffer.
 * No stdio in a TA; this understands %s, %d, %u, %zu and %%.
 */
#include <stdarg.h>

#include "omg_core.h"

static void put(char *err, size_t errlen, size_t *n, char c)
{
	if (*n + 1 < errlen)
		err[(*n)++] = c;
}

static void put_u64(char *err, size_t errlen, size_t *n, uint64_t v)
{
	char digits[20];
	int k = 0;

	do {
		digits[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && k < 20);
	while (k)
		put(err, errlen, n, digits[--k]);
}

omg_status omg_fail(char *err, size_t errlen, omg_status code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	code = omg_vfail(err, errlen, code, fmt, ap);
	va_end(ap);
	return code;
}

omg_status omg_vfail(char *err, size_t errlen, omg_status code, const char *fmt, va_list ap)
{
	size_t n = 0;

	if (!err || !errlen)
		return code;
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			put(err, errlen, &n, *p);
			continue;
		}
		p++;
		if (*p == 's') {
			const char *s = va_arg(ap, const char *);
			for (; s && *s; s++)
				put(err, errlen, &n, *s);
		} else if (*p == 'd') {
			int v = va_arg(ap, int);
			if (v < 0) {
				put(err, errlen, &n, '-');
				put_u64(err, errlen, &n, (uint64_t)(-(int64_t)v));
			} else {
				put_u64(err, errlen, &n, (uint64_t)v);
			}
		} else if (*p == 'u') {
			put_u64(err, errlen, &n, va_arg(ap, unsigned int));
		} else if (*p == 'z' && p[1] == 'u') {
			p++;
			put_u64(err, errlen, &n, va_arg(ap, size_t));
		} else if (*p == '%') {
			put(err, errlen, &n, '%');
		} else {
			break; /* unknown conversion: stop rather than misread the arguments */
		}
	}
	err[n] = '\0';
	return code;
}
