#!/usr/bin/env python3
"""Writes vad_reference.txt (beside this script): the speech probability that the reference Python package
gives for every 512-sample chunk of a few real-speech WAV files, streamed chunk by chunk as the appliance
streams them. tests/vad.rs compares airlock-transcribe's VadStream against it.

Reference = PyPI silero-vad 6.2.3, `load_silero_vad(onnx=True)` (its OnnxWrapper over silero_vad.onnx,
which keeps the 64-sample context and the state between calls), run by PyPI onnxruntime 1.31.1 (the
version ci/install-vad installs). silero_vad imports torch, so torch must be installed too.

Audio: Debian package pocketsphinx-testdata (apt-get install pocketsphinx-testdata), 16 kHz mono PCM16,
read as int16 / 32768.

Run (from the repository root, outside any project venv):
    python3 -m venv /tmp/vadref
    /tmp/vadref/bin/pip install silero-vad==6.2.3 onnxruntime==1.31.1 torch
    /tmp/vadref/bin/python appliance/transcribe/tests/data/make_vad_reference.py
"""
import datetime
import hashlib
import os
import sys
import wave
from importlib.metadata import version

import numpy as np
import onnxruntime
import silero_vad
import torch

AUDIO = [
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "/usr/share/pocketsphinx/test/data/cards/005.wav",
]
CHUNK = 512
RATE = 16000


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_pcm16(path):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def main():
    assert version("silero-vad") == "6.2.3", version("silero-vad")
    assert onnxruntime.__version__ == "1.31.1", onnxruntime.__version__
    model = silero_vad.load_silero_vad(onnx=True)
    model_path = os.path.join(os.path.dirname(silero_vad.__file__), "data", "silero_vad.onnx")
    out = [
        "# Silero VAD reference: speech probability per 512-sample chunk (32 ms at 16 kHz), one per line,",
        "# streamed chunk by chunk through silero_vad.utils_vad.OnnxWrapper with reset_states() before each file;",
        "# the last chunk of a file is zero-padded (as OnnxWrapper.audio_forward does).",
        "# Written by appliance/transcribe/tests/data/make_vad_reference.py on "
        + datetime.date.today().isoformat(),
        f"# silero-vad {version('silero-vad')} (silero_vad.onnx sha256 {sha256(model_path)}),"
        f" onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, numpy {np.__version__},"
        f" python {sys.version.split()[0]}",
        "# Audio: Debian pocketsphinx-testdata; 'file PATH SHA256 SAMPLES' starts each file.",
    ]
    for path in AUDIO:
        x = read_pcm16(path)
        padded = np.concatenate([x, np.zeros((-len(x)) % CHUNK, dtype=np.float32)])
        model.reset_states()
        probs = [
            float(model(torch.from_numpy(padded[i : i + CHUNK].copy()), RATE).item())
            for i in range(0, len(padded), CHUNK)
        ]
        # The package's own whole-file helper must agree with the chunk-by-chunk loop above.
        whole = model.audio_forward(torch.from_numpy(x.copy()), RATE).numpy().reshape(-1)
        assert np.array_equal(np.asarray(probs, dtype=np.float32), whole), path
        out.append(f"file {path} {sha256(path)} {len(x)}")
        out.extend(f"{p:.9g}" for p in probs)
    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vad_reference.txt")
    with open(target, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {target}: {sum(1 for line in out if line[0].isdigit())} chunks", file=sys.stderr)


if __name__ == "__main__":
    main()
