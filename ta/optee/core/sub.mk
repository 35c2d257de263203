# The portable core inside an OP-TEE TA build (ta/optee/ta links here).
# The host library (../hostlib) builds the same files with its own flags.
srcs-y += cbor.c cose.c engine.c fmath.c frontend.c kernels.c license.c package.c \
	  tflite_fb.c util.c
# as the host library's flags: no errno from sqrt (so no libm call), no FMA
# (the same floats as on x86); fmath compares floats exactly on purpose.
# -O3 (after the dev kit's -Os) as the host library: the FFT and the kernels
# vectorize, and the board's plain side (omg bench --board) runs the same code
cflags-y += -Werror -fno-math-errno -ffp-contract=off -Wno-float-equal -O3
