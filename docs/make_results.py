"""Run the reproduction rows and write ``docs/results.md`` (generated, never typed).

Usage::

    python docs/make_results.py --cache cache/ravdess [--w2v2-cache DIR --w2v2-label TEXT]
                                [--rows eg-dense-spk,...] [--seeds 5] [--force]

Each row is one ``estimators fit`` command (shown verbatim on the page) whose
``report.json`` lands in ``runs/results/<row>/``; rows whose report exists are not re-run
unless ``--force``. Rows whose features the cache lacks are listed as "not run" with the
reason. ``--w2v2-cache`` runs the wav2vec2 rows on another cache (here: one built with
*randomly initialised* weights, to show the pipeline end to end; ``--w2v2-label`` says so on
the page, and such rows are never presented as results). The page puts every figure beside the paper's (Pepino et al., Interspeech 2021,
Tables 1 and 2, RAVDESS, mean ± std over 5 seeds), with the date, versions and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    key: str
    features: str
    model: str
    normalize: str
    paper: str  # the paper's RAVDESS figure (7 classes, speech + song), or "-"
    note: str = ""


ROWS = [
    Row("eg-dense-spk", "egemaps", "dense", "speaker", "57.0 ± 2.4"),
    Row("spec-dense-spk", "spectrogram", "dense", "speaker", "44.5 ± 0.8"),
    Row("mfcc-dense-spk", "mfcc", "dense", "speaker", "-"),
    Row("logmel-dense-spk", "logmel", "dense", "speaker", "-"),
    Row("eg-dense-glob", "egemaps", "dense", "global", "-"),
    Row("spec-dense-glob", "spectrogram", "dense", "global", "-"),
    Row("mfcc-dense-glob", "mfcc", "dense", "global", "-"),
    Row("logmel-dense-glob", "logmel", "dense", "global", "-"),
    Row("eg-cnn-spk", "egemaps", "cnn", "speaker", "-"),
    Row("mfcc-cnn-spk", "mfcc", "cnn", "speaker", "-"),
    Row("eg-lstm-spk", "egemaps", "lstm", "speaker", "-"),
    Row("mfcc-lstm-spk", "mfcc", "lstm", "speaker", "-"),
    Row("mfcc-eg-fusion-spk", "mfcc+egemaps", "fusion", "speaker", "-"),
    Row("w2v2-all-dense-spk", "all_layers", "dense", "speaker", "84.3 ± 1.7", "needs wav2vec_small features"),
    Row("w2v2-local-dense-spk", "local_encoder", "dense", "speaker", "65.4 ± 1.7", "needs wav2vec_small features"),
    Row("w2v2-output-dense-spk", "output", "dense", "speaker", "69.0 ± 0.2", "needs wav2vec_small features"),
    Row("w2v2-all-dense-glob", "all_layers", "dense", "global", "75.7 ± 2.3", "needs wav2vec_small features"),
    Row("w2v2-all-lstm-glob", "all_layers", "lstm", "global", "74.6 ± 3.7", "needs wav2vec_small features"),
    Row("w2v2-fusion-glob", "all_layers+egemaps", "fusion", "global", "77.5 ± 1.0", "needs wav2vec_small features"),
]



def command(row: Row, cache: str, seeds: int, out: Path) -> list[str]:
    return [
        "estimators", "fit", "--cache", cache, "--features", row.features, "--model", row.model,
        "--normalize", row.normalize, "--cv", "ravdess-pepino", "--seeds", str(seeds),
        "--out", str(out), "--overwrite", "--no-refit", "-q",
    ]


def as_run(cmd: list[str], rep: dict | None) -> list[str]:
    """The short command, without --no-refit when the report's run refitted (an older run)."""
    if rep is not None and "--no-refit" not in rep.get("command", ""):
        return [c for c in cmd if c != "--no-refit"]
    return cmd


def is_w2v2(row: Row) -> bool:
    return row.key.startswith("w2v2")


def run_command(key: str, cmd: list[str], out: Path, force: bool) -> tuple[dict | None, str]:
    """Run one ``estimators fit`` command unless ``out`` already holds its report.

    Returns the report (None when the command failed) and the command as shown on the page
    (a failed one ends with ``# not run: <its last output line>``).
    """
    rep = ROOT / out / "report.json"
    if rep.exists() and not force:
        old = json.loads(rep.read_text())
        return old, shlex.join(as_run(cmd, old))
    t0 = time.perf_counter()
    exe = [sys.executable, "-c", "from cli.estimators import main; main()"] + cmd[1:]
    proc = subprocess.run(exe, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        why = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
        print(f"{key}: not run: {why}", file=sys.stderr)
        return None, shlex.join(cmd) + f"  # not run: {why}"
    print(f"{key}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return json.loads(rep.read_text()), shlex.join(cmd)


def run_row(row: Row, cache: str, seeds: int, force: bool) -> tuple[dict | None, str]:
    out = Path("runs") / "results" / row.key
    return run_command(row.key, command(row, cache, seeds, out), out, force)


def machine() -> str:
    flags, model = "", ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                f = set(line.split(":", 1)[1].split())
                flags = ", ".join(x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if x in f)
    except OSError:
        pass
    return f"{model or platform.machine()}, {os.cpu_count()} cores ({flags}), no GPU used, Python {platform.python_version()}"


def _paper(text: str) -> tuple[float, float] | None:
    if "±" not in text:
        return None
    m, s = text.split("±")
    return float(m), float(s)


def _uar(rep: dict) -> tuple[float, float]:
    u = rep["metrics"]["uar"]
    return 100 * u["mean"], 100 * u["std"]


def _cell(rep: dict | None) -> tuple[str, str, str]:
    if rep is None:
        return "not run", "-", "-"
    m, s = _uar(rep)
    return f"{m:.1f} ± {s:.1f}", str(len(rep["metrics"]["uar"]["values"])), f"{rep.get('wall_seconds', float('nan')):.0f}"


def _diff(row: Row, rep: dict | None) -> str:
    p = _paper(row.paper)
    if rep is None or p is None:
        return "-"
    d = _uar(rep)[0] - p[0]
    flag = " (more than the paper's std)" if abs(d) > p[1] else ""
    return f"{d:+.1f}{flag}"


def user_commands(seeds: int) -> list[str]:
    return [
        "featcache extract --model wav2vec_small --corpus ravdess --data-dir PATH/TO/RAVDESS --features wav2vec2,egemaps",
        *[
            shlex.join(command(r, "cache/ravdess", 5, Path("runs") / "results" / r.key)[:-1])
            for r in ROWS if is_w2v2(r)
        ],
    ]


#: systems of the other papers that need pretrained weights (and, for fine-tuning, a GPU):
#: listed on the page as commands, never run by this script
OTHER_SYSTEMS = [
    "# Morais et al. (IEMOCAP 4 classes, leave one session out): a cache with both upstreams",
    "featcache extract --corpus iemocap --model wav2vec_small --features wav2vec2",
    "featcache extract --corpus iemocap --model hubert_base --features wav2vec2",
    "estimators fit --cache cache/iemocap --features wav2vec_small:all_layers --model dense --cv iemocap-loso --seeds 5        # mean pooling",
    "estimators fit --cache cache/iemocap --features wav2vec_small:all_layers --model ecapa --cv iemocap-loso --seeds 5        # ECAPA-TDNN",
    "estimators fit --cache cache/iemocap --features wav2vec_small:all_layers+hubert_base:all_layers --model ecapa --fusion early --cv iemocap-loso --seeds 5",
    "estimators fit --cache cache/iemocap --features wav2vec_small:all_layers+hubert_base:all_layers --model ecapa --fusion late --cv iemocap-loso --seeds 5",
    "# Morais et al., fine-tuned upstream + average of the 5 best checkpoints (mean pooling + linear), GPU",
    "estimators finetune --cache cache/iemocap --model wav2vec_small --cv iemocap-loso --average 5 --max-epochs 30 --device cuda --precision bf16 --out runs/ft_w2v2",
    "estimators finetune --cache cache/iemocap --model hubert_base --cv iemocap-loso --average 5 --max-epochs 30 --device cuda --precision bf16 --out runs/ft_hubert",
    "# NTU report setting (RAVDESS, speaker-independent folds; lr 1e-4, 2 accumulated batches, 25 epochs), GPU",
    "estimators finetune --cache cache/ravdess --model xlsr53 --cv ravdess-6fold --lr 1e-4 --accumulate 2 --max-epochs 25 --device cuda --out runs/ft_ntu",
]


def other_systems_section() -> list[str]:
    return [
        "## Other systems: ECAPA-TDNN, fusion of two upstreams, fine-tuning (not run here)",
        "",
        "These need pretrained weights (and a GPU for fine-tuning), which the machine that generated this page",
        "does not have. **Not run here**; the commands a user with weights and a GPU runs:",
        "",
        "```bash",
        *OTHER_SYSTEMS,
        "```",
        "",
        "Pipeline check of these systems with **random** upstreams on the real RAVDESS recordings (not a result):",
        "[morais_check.md](morais_check.md), generated by `docs/morais_check.py`.",
        "",
    ]


def write_page(results: list[tuple[Row, dict | None, str]], cache: str, w2v2_cache: str | None, w2v2_label: str | None, seeds: int) -> Path:
    import featcache

    c = featcache.open(cache)
    t = c.utterances
    channels = ", ".join(sorted(set(t["vocal_channel"]))) if "vocal_channel" in t.columns else "?"
    argv = f"python docs/make_results.py --cache {cache} --seeds {seeds}"
    if w2v2_cache:
        argv += f" --w2v2-cache {w2v2_cache} --w2v2-label {shlex.quote(w2v2_label or '')}"
    lines = [
        "# Results",
        "",
        f"Generated by `python docs/make_results.py` (last call: `{argv}`) on {time.strftime('%Y-%m-%d')}; machine: {machine()}.",
        "Every figure below was read from the `report.json` written by the command in its row; nothing is typed by hand.",
        "\"wall s\" is that command's wall time on a 2-core machine shared with other jobs: not a benchmark",
        "(the first row also ran before the CLIs set `OMP_WAIT_POLICY=PASSIVE`, with its final refit).",
        "",
        "## RAVDESS, protocol `ravdess-pepino`",
        "",
        "Actors 1-20 train, 21-22 validation (early stopping, patience 4), 23-24 test; 7 classes (calm merged",
        "into neutral); UAR (balanced accuracy) in %, mean ± std over seeds (random_state 0..N-1).",
        f"Our cache: `{cache}`, {len(t)} utterances of {t['speaker'].nunique()} actors, vocal channel: **{channels}**",
        "(the real RAVDESS speech recordings, 16 kHz FLAC). The paper (Pepino, Riera & Ferrer, Interspeech 2021,",
        "Tables 1-2) used speech **and song**, so its training and test sets are larger and differ from ours:",
        "the paper's column is for comparison, not the same experiment. \"Δ\" is ours minus the paper's mean.",
        "The test set is 2 actors (120 of our utterances): the sampling error of a UAR measured on it is several",
        "points (a binomial standard error of about 4.5 points at 46 %), far more than the seed-to-seed std shown.",
        "",
        "### Handcrafted features (real data)",
        "",
        "| features | model | normalisation | ours (UAR %) | seeds | wall s | paper (UAR %) | Δ | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, rep, cmd in results:
        if is_w2v2(row):
            continue
        ours, n, wall = _cell(rep)
        lines.append(f"| {row.features} | {row.model} | {row.normalize} | {ours} | {n} | {wall} | {row.paper} | {_diff(row, rep)} | `{cmd}` |")
    if any(rep is None for row, rep, _ in results if not is_w2v2(row)):
        lines += ["", "\"not run\": the row's command had not completed when this page was generated (no `report.json`)."]
    counts = sorted({len(rep["metrics"]["uar"]["values"]) for row, rep, _ in results if rep and not is_w2v2(row)}, reverse=True)
    if len(counts) > 1:
        lines += ["", "\"seeds\" differ between rows (" + ", ".join(map(str, counts)) + "): rows were run with as many seeds "
                  "as the session's time allowed; every count is the one the command in its row used."]
    lines += [
        "",
        "### wav2vec 2.0 features",
        "",
        "Pretrained weights cannot be downloaded on the machine that generated this page. With the weights",
        "(HuggingFace `facebook/wav2vec2-base`, short name `wav2vec_small`), the paper's rows are:",
        "",
        "```bash",
        *user_commands(seeds),
        "```",
        "",
    ]
    w2 = [(row, rep, cmd) for row, rep, cmd in results if is_w2v2(row)]
    if w2v2_cache and any(rep for _, rep, _ in w2):
        lines += [
            f"**Pipeline check only, not a result:** {w2v2_label}. These numbers say nothing about wav2vec 2.0;",
            "they show that extraction, the all-layer Dense/LSTM/Fusion heads, the layer weights and the",
            "report run end to end on the real recordings.",
            "",
            "| features | model | normalisation | random-weights run (UAR %) | seeds | wall s | paper, pretrained (UAR %) | command |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row, rep, cmd in w2:
            ours, n, wall = _cell(rep)
            lines.append(f"| {row.features} | {row.model} | {row.normalize} | {ours} | {n} | {wall} | {row.paper} | `{cmd}` |")
        fig_src = ROOT / "runs" / "results" / "w2v2-all-dense-spk" / "layer_weights.png"
        if fig_src.exists():
            fig = ROOT / "docs" / "figures" / "layer_weights_random_w2v2.png"
            fig.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig_src, fig)
            lines += [
                "",
                "Layer weights (per layer, mean ± std over seeds), written by the `w2v2-all-dense-spk` command as",
                "`layer_weights.png` (like the paper's Figure 2); **random weights, so the shape means nothing**:",
                "",
                "![layer weights, random-weight wav2vec2](figures/layer_weights_random_w2v2.png)",
            ]
    else:
        lines.append("The wav2vec 2.0 rows were not run here.")
    lines += ["", *other_systems_section()]
    lines += [
        "## Other protocols",
        "",
        "RAVDESS, EMOVO and URDU (`ravdess-pepino`, `emovo-loao`, `urdu-5fold`), classic baselines beside our heads,",
        "and the cross-corpus matrix: [results_corpora.md](results_corpora.md), generated by `docs/make_corpora_results.py`.",
        "`ravdess-6fold`, `iemocap-loso` and `emodb-loso` are implemented and tested on synthetic corpora; their",
        "corpora are not on the machine that generated this page, so they have no rows yet.",
    ]
    vers = next((r["versions"] for _, r, _ in results if r), {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()), ""]
    path = ROOT / "docs" / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--w2v2-cache", default=None, help="cache holding wav2vec2 features for the w2v2 rows")
    ap.add_argument("--w2v2-label", default=None, help="what that cache's model is (shown on the page)")
    ap.add_argument("--rows", default=None, help="comma-separated row keys (default: all)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seeds-for", default="", help="per-row seed counts, e.g. eg-lstm-spk=2,mfcc-cnn-spk=3")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--page-only", action="store_true", help="write the page from existing reports, run nothing")
    a = ap.parse_args()
    if a.w2v2_cache and not a.w2v2_label:
        ap.error("--w2v2-label is required with --w2v2-cache (say what the model is, e.g. random weights)")
    keys = set(a.rows.split(",")) if a.rows else None
    per_row = dict((k, int(v)) for k, _, v in (x.partition("=") for x in a.seeds_for.split(",") if x))
    results = []
    for row in ROWS:
        seeds = per_row.get(row.key, a.seeds)
        cache = a.w2v2_cache if is_w2v2(row) else a.cache
        out = Path("runs") / "results" / row.key
        skip = a.page_only or (keys is not None and row.key not in keys) or (is_w2v2(row) and not a.w2v2_cache)
        if skip:
            rep_path = ROOT / out / "report.json"
            rep = json.loads(rep_path.read_text()) if rep_path.exists() and cache else None
            if rep is not None:
                seeds = len(rep["metrics"]["uar"]["values"])
            results.append((row, rep, shlex.join(as_run(command(row, cache or "CACHE", seeds, out), rep))))
            continue
        rep, cmd = run_row(row, cache, seeds, a.force)
        results.append((row, rep, cmd))
    print(write_page(results, a.cache, a.w2v2_cache, a.w2v2_label, a.seeds))


if __name__ == "__main__":
    main()
