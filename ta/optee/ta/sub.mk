global-incdirs-y += include ../include ../core
srcs-y += omg_ta.c
# the portable core, through a link to ../core (its own sub.mk lists it)
subdirs-y += core
cflags-y += -Werror -fno-math-errno -ffp-contract=off
cppflags-y += -DOMG_VENDOR_KEY_BYTES='$(OMG_VENDOR_KEY_BYTES)'
