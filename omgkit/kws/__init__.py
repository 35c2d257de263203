"""The keyword-spotting pipeline: from speech to a converted, evaluated run.

One module per stage, in the order a run goes through them:

- ``labels``, ``audio``: the 12 classes and the clip format (16 kHz mono
  int16, one second; the sizes come from the host/TA contract,
  ``omg_ta.commands``);
- ``corpus`` (offline synthetic speech), ``fetch`` (Speech Commands, online),
  ``dataset`` (one loader for both, speaker-disjoint splits), ``augment``;
- ``features`` (the TA's own frontend over whole datasets), ``models``,
  ``train``, ``convert`` (TFLite float32 and int8), ``evaluate``;
- ``run``: the run directory and its typed manifest; ``release``: what a
  run hands the vendor to seal (model bytes, frontend settings, labels).

Nothing here imports the guard, the TEE or the boards; they import this.
TensorFlow loads only inside training and conversion.
"""
