"""omgkit: the Offline Model Guard workbench.

Heavy parts (TensorFlow) load only when a training or conversion function
is called, so importing omgkit stays light.
"""

__version__ = "0.1.0"
