"""A one-second microphone in the browser (anywidget): 16 kHz mono int16 to Python.

The browser asks for the microphone (``getUserMedia``, with echo
cancellation, noise suppression and automatic gain off: the model should
hear the room as it is), records into an ``AudioContext`` running at
16 kHz (Chromium resamples; tested there, with its fake capture device —
Firefox refuses a context rate unlike the device's, and says so in the
widget's status), converts to int16 and sends the clip to the
kernel as bytes. Python sees one clip per press (:attr:`Microphone.clip`,
``on_clip`` callbacks).

Honest about where this audio goes: the browser, the kernel and the
notebook are the normal world, so they hear it. The walkthrough then plays
it into the TEE's *emulated* secure microphone (``mic_play``), which stands
in for hardware a normal world cannot read (docs/threat-model.md).
"""

from __future__ import annotations

from collections.abc import Callable

import anywidget
import numpy as np
import traitlets

from omg_ta import commands as C

_ESM = r"""
function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "omg-mic";
  const btn = document.createElement("button");
  btn.className = "omg-mic-record jupyter-button";
  btn.textContent = "● record 1 s";
  const st = document.createElement("span");
  st.className = "omg-mic-status";
  st.style.marginLeft = "1em";
  box.append(btn, st);
  el.append(box);
  const say = (s) => { st.textContent = s; };
  model.on("change:status", () => say(model.get("status")));
  say(model.get("status"));
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    const rate = model.get("rate"), need = Math.round(model.get("seconds") * rate);
    let stream = null, ctx = null;
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia)
        throw new Error("this page cannot reach a microphone (it needs https or localhost)");
      say("asking for the microphone…");
      stream = await navigator.mediaDevices.getUserMedia({ audio: {
        channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
      ctx = new AudioContext({ sampleRate: rate });
      const src = ctx.createMediaStreamSource(stream);
      const proc = ctx.createScriptProcessor(4096, 1, 1);
      const buf = new Float32Array(need);
      let n = 0;
      say("recording…");
      await new Promise((resolve) => {
        proc.onaudioprocess = (e) => {
          const x = e.inputBuffer.getChannelData(0);
          const k = Math.min(x.length, need - n);
          if (k > 0) { buf.set(x.subarray(0, k), n); n += k; }
          if (n >= need) resolve();
        };
        src.connect(proc);
        proc.connect(ctx.destination);
      });
      proc.disconnect();
      src.disconnect();
      const pcm = new Int16Array(need);
      for (let i = 0; i < need; i++) {
        const v = Math.max(-1, Math.min(1, buf[i]));
        pcm[i] = v < 0 ? v * 32768 : v * 32767;
      }
      model.set("clip", new DataView(pcm.buffer));
      model.set("error", "");
      model.set("count", model.get("count") + 1);
      model.save_changes();
      say("sent " + need + " samples at " + rate + " Hz");
    } catch (e) {
      model.set("error", String(e));
      model.save_changes();
      say("✘ " + e);
    } finally {
      if (stream) stream.getTracks().forEach((t) => t.stop());
      if (ctx) await ctx.close();
      btn.disabled = false;
    }
  });
}
export default { render };
"""


class _Buffer(traitlets.Bytes):
    """Bytes that also takes what a front end's binary message arrives as (a memoryview)."""

    def validate(self, obj, value):
        if isinstance(value, (memoryview, bytearray)):
            value = bytes(value)
        return super().validate(obj, value)


class Microphone(anywidget.AnyWidget):
    """``Microphone(on_clip=fn)``: a record button; ``fn(int16 array)`` per recording."""

    _esm = _ESM
    rate = traitlets.Int(C.SAMPLE_RATE).tag(sync=True)
    seconds = traitlets.Float(C.CLIP_SAMPLES / C.SAMPLE_RATE).tag(sync=True)
    clip = _Buffer(b"").tag(sync=True)
    count = traitlets.Int(0).tag(sync=True)
    """Recordings received (the browser bumps it with each clip)."""
    error = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("press to record one second (your browser will ask first)").tag(
        sync=True
    )

    def __init__(self, on_clip: Callable[[np.ndarray], None] | None = None, **kw):
        super().__init__(**kw)
        self.callbacks: list[Callable[[np.ndarray], None]] = [on_clip] if on_clip else []
        self.observe(self._received, names="count")

    def audio(self) -> np.ndarray:
        """The last recording, int16."""
        return np.frombuffer(self.clip, dtype="<i2").copy()

    def _received(self, _change) -> None:
        a = self.audio()
        for fn in self.callbacks:
            fn(a)
