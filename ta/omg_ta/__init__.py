"""omg_ta: the trusted application of Offline Model Guard.

Everything in this package runs inside the TEE and is covered by the TA's
measurement. It is self-contained: it imports numpy, cryptography and the
inference runtimes, never the workbench (``omgkit``) and never TensorFlow.
"""

__version__ = "0.1.0"
