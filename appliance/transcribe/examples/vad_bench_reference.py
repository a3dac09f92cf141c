#!/usr/bin/env python3
"""Reference for vad_bench: the same silero_vad.onnx in the same ONNX Runtime version, driven from Python
the way silero-vad's OnnxWrapper drives it (1 intra-op + 1 inter-op thread, CPU provider), without torch.
Prints this thread's CPU time per leg-chunk for batches of 1, 10, 100 and 400 legs.

    python3 -m venv /tmp/ortref && /tmp/ortref/bin/pip install onnxruntime==1.31.1 numpy
    /tmp/ortref/bin/python appliance/transcribe/examples/vad_bench_reference.py [MODEL]
"""
import sys
import time

import numpy as np
import onnxruntime as ort

model = sys.argv[1] if len(sys.argv) > 1 else "airlock-data/models/silero_vad.onnx"
options = ort.SessionOptions()
options.inter_op_num_threads = 1
options.intra_op_num_threads = 1
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"], sess_options=options)
sr = np.array(16000, dtype=np.int64)
rng = np.random.default_rng(1)
print(f"onnxruntime {ort.__version__} (Python), {model}")
print("legs  CPU us/leg-chunk  CPU us/call")
for legs in [1, 10, 100, 400]:
    x = (rng.standard_normal((legs, 576)) * 0.1).astype(np.float32)
    state = np.zeros((2, legs, 128), np.float32)
    for _ in range(20):
        session.run(None, {"input": x, "state": state, "sr": sr})
    calls = max(6000 // legs, 20)
    start = time.thread_time()
    for _ in range(calls):
        _, state = session.run(None, {"input": x, "state": state, "sr": sr})
    cpu = time.thread_time() - start
    print(f"{legs:>4} {cpu / calls / legs * 1e6:>17.1f} {cpu / calls * 1e6:>12.1f}")
