global-incdirs-y += .
srcs-y += key_thief_ta.c
