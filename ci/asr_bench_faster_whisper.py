"""Reference engine for ci/asr_bench.py: faster-whisper on the CTranslate2 Whisper tiny.en model.

Usage: asr_bench_faster_whisper.py --model DIR --input LIST.json
LIST.json is [{"id": ..., "path": 16 kHz s16 mono WAV}]. Prints one JSON line {"id", "text", "cpu_s"} per
utterance (each file is transcribed as one unit), then {"load_s", "startup_cpu_s"}: wall time of the model
load, and this process's CPU time up to the end of the load (interpreter, imports and load).
Settings as in the project's faster-whisper reference measurement: int8, 1 thread, greedy, English, no VAD, no context, no timestamps.
"""
import argparse
import json
import sys
import time
import wave

import numpy as np
from faster_whisper import WhisperModel


def read_wav(path):
    with wave.open(path) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            sys.exit(f"{path}: need 16 kHz mono s16")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    args = ap.parse_args()
    with open(args.input) as f:
        items = json.load(f)

    t0 = time.perf_counter()
    model = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)
    load_s = time.perf_counter() - t0
    startup_cpu_s = time.process_time()

    for item in items:
        audio = read_wav(item["path"])
        c0 = time.process_time()
        segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                       condition_on_previous_text=False, without_timestamps=True)
        text = "".join(s.text for s in segments).strip()  # segments is lazy: decoding happens here
        print(json.dumps({"id": item["id"], "text": text, "cpu_s": round(time.process_time() - c0, 4)}), flush=True)
    print(json.dumps({"load_s": round(load_s, 4), "startup_cpu_s": round(startup_cpu_s, 4)}), flush=True)


if __name__ == "__main__":
    main()
