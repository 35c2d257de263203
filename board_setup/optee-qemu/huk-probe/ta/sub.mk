global-incdirs-y += . ..
srcs-y += huk_probe_ta.c
