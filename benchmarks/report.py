"""The results table: rows from the raw results, markdown, JSON and ``docs/benchmarks.md``.

Every row has: the figure, ours, the baseline, their ratio, the limit, the fraction of the
limit reached, the target and whether it is met (``met`` / ``NOT MET`` / ``info`` /
``not measured``). Raw numbers stay in the JSON; the table rounds them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

#: Equality tolerances: max |ours - one-at-a-time| / layer max. fp32: the float16 storage
#: (relative rounding 2^-11) plus float32 reordering; bf16: bf16 rounding (2^-9 relative
#: per operation) accumulated through 12 blocks (featcache's README measured 1.4-2.1 % of the
#: layer maximum for bf16 vs fp32 on this model).
EQUALITY_TOL = {"fp32": 2e-3, "bf16": 5e-2, "fp16": 2e-2}

BEGIN = "<!-- benchmarks:begin (written by `python -m benchmarks --write-doc`; edit outside these markers) -->"
END = "<!-- benchmarks:end -->"


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _err(*parts) -> str | None:
    for p in parts:
        if isinstance(p, dict) and "error" in p:
            return p["error"]
    return None


def fmt(x: Any, unit: str = "", digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if unit == "%":
        return f"{100 * x:.0f} %" if abs(x) >= 0.1 else f"{100 * x:.1f} %"
    if unit == "x":
        return f"{x:.2f}x"
    if unit == "GB":
        return f"{x / 1e9:.2f} GB"
    if abs(x) >= 100:
        s = f"{x:,.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    elif abs(x) >= 0.01 or x == 0:
        s = f"{x:.{digits - 1}f}" if abs(x) < 1 else f"{x:.2f}"
    else:
        s = f"{x:.1e}"
    return f"{s} {unit}".strip()


def row(num, figure, ours=None, baseline=None, ratio=None, limit=None, frac=None, target="", status="info", note="") -> dict:
    return {
        "id": num,
        "figure": figure,
        "ours": ours,
        "baseline": baseline,
        "ratio": ratio,
        "limit": limit,
        "fraction_of_limit": frac,
        "target": target,
        "status": status,
        "note": note,
    }


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT MET")


def limits(machine: dict) -> dict:
    """The matmul rates (GFLOP/s) used as limits: the best round on the torch threads used."""
    out = {}
    for p in ("fp32", "bf16"):
        m = _get(machine, "matmul", p) or {}
        out[p] = m.get("gflops_best")
    return out


def build_rows(R: dict) -> list[dict]:
    """All table rows from the results dict written by :mod:`benchmarks.__main__`."""
    rows: list[dict] = []
    machine = R.get("machine", {})
    rate = limits(machine)
    parts = R.get("parts", [])

    # ---------------------------------------------------------------- 1 extraction
    if "extraction" in parts:
        ex = R.get("extraction", {})
        probe, naive, ssl, hc, allf, eq = (ex.get(k, {}) for k in ("probe", "naive", "ours_ssl", "ours_handcrafted", "ours_all", "equality"))
        err = _err(probe, naive, ssl)
        if err:
            rows.append(row("1", "extraction", status="failed", note=err))
        else:
            fps = _get(probe, "flops_per_audio_second", "total")
            prec = ssl.get("precision", "fp32")
            lim = {p: (rate[p] * 1e9 / fps if rate.get(p) and fps else None) for p in ("fp32", "bf16")}
            ours, base = ssl["audio_s_per_s"], naive["audio_s_per_s"]
            n = probe.get("n_files")
            what = f"{n} files, {probe.get('audio_seconds', 0):.0f} s of audio"
            mi = probe.get("model") or {}
            model = "wav2vec2-base" if mi.get("hidden_size", 768) == 768 else f"tiny wav2vec2 (hidden {mi.get('hidden_size')})"
            # issue 17: the precision this machine should use is bf16 only where it is native
            native = machine.get("onednn_native_bf16") is not False
            should = "bf16" if native else "fp32"
            need = 1.5 if native else 1.0
            rows.append(row("1a", f"extraction {model}, all {mi.get('n_layers', 13)} layers ({what}): audio-s/s, ours {prec} vs naive per-file fp32",
                            ours, base, ours / base, lim.get(prec), ours / lim[prec] if lim.get(prec) else None,
                            f">= {need:g}x naive fp32", _status(ours / base >= need),
                            note="" if native else "no native bf16 here: the same precision as the naive loop"))
            for p in ("bf16", "fp32"):
                if lim.get(p):
                    tgt = f">= 80 % of the {p} limit" if p == should else ""
                    rows.append(row("1b" if p == "bf16" else "1c", f"extraction vs the {p} compute limit ({rate[p]:.3g} GFLOP/s / {fps / 1e9:.2f} GFLOP per audio-s)",
                                    ours, None, None, lim[p], ours / lim[p], tgt, _status(ours / lim[p] >= 0.8) if p == should else "info"))
            pr = probe.get("probe_rates", {})
            if pr:
                rows.append(row("1d", "model alone, " + ", ".join(f"{k}" for k in pr) + f" (featcache batch, {probe.get('probe_audio_seconds', 0):.0f} s probe): audio-s/s",
                                " / ".join(fmt(v) for v in pr.values()), None, None, " / ".join(fmt(lim.get(k)) for k in pr),
                                " / ".join(fmt(v / lim[k], "%") if lim.get(k) else "-" for k, v in pr.items()), "", "info",
                                note=f"ours runs in {prec}" + "".join(f"; {k} timed on 1 s of audio, once (no native bf16)" for k in probe.get("probe_emulated", []))))
            if not _err(hc, allf) and allf:
                t_ssl, t_hc, t_all = ssl["wall_seconds"], hc["wall_seconds"], allf["wall_seconds"]
                hidden = (t_ssl + t_hc - t_all) / t_hc if t_hc > 0 else None
                rows.append(row("1e", "wav2vec2 + MFCC + eGeMAPS vs wav2vec2 alone: audio-s/s (decoding and handcrafted features overlapped with the model)",
                                allf["audio_s_per_s"], ssl["audio_s_per_s"], t_all / t_ssl, None, None,
                                "<= 1.10x the time of wav2vec2 alone", _status(t_all / t_ssl <= 1.10),
                                note=f"MFCC+eGeMAPS alone take {t_hc:.1f} s (first calls included); {fmt(hidden, '%')} of that hidden behind the model"
                                " (negative: together slower than the sum)" if hidden is not None else ""))
            if eq and not _err(eq):
                tol = EQUALITY_TOL.get(prec, 5e-2)
                same = eq.get("vs_single_same_precision", {})
                ref = eq.get("vs_naive_fp32", {})
                rows.append(row("1f", f"equality: ours (batched, float16 store) vs featcache one-at-a-time, both {prec}: max abs diff / layer max",
                                same.get("max_rel"), None, None, None, None, f"<= {tol:g}", _status(same.get("max_rel") is not None and same["max_rel"] <= tol),
                                note=f"mean {fmt(same.get('mean_rel'))}, {same.get('n')} utterances"))
                tol_ref = max(tol, EQUALITY_TOL["fp32"])
                rows.append(row("1g", f"equality: ours ({prec}) vs naive transformers per file (fp32, batch of 1): max abs diff / layer max",
                                ref.get("max_rel"), None, None, None, None, f"<= {tol_ref:g}",
                                _status(ref.get("max_rel") is not None and ref["max_rel"] <= tol_ref and ref.get("shapes_equal", False)),
                                note=f"mean {fmt(ref.get('mean_rel'))}, {ref.get('n')} utterances, shapes equal: {ref.get('shapes_equal')}"))

    # ---------------------------------------------------------------- 2 training
    tr = R.get("training", {})
    if "training" in parts:
        ours, naive, eqv = tr.get("ours", {}), tr.get("naive", {}), tr.get("equivalence", {})
        err = _err(ours, naive)
        if err:
            rows.append(row("2", "training", status="failed", note=err))
        else:
            ep = ours["epoch_seconds"]
            epoch = min(ep[1:]) if len(ep) > 1 else ep[0]
            n_ep = naive["epoch_seconds"][0]
            frames = ours["frames"]
            lim_t = tr.get("limit", {}).get("seconds")
            size = f"{ours['n_utterances']} utt., {frames / 1e3:.0f}k frames x {tr.get('n_layers', 13)} x {tr.get('dim', 768)} {ours['data_dtype']} = {ours['data_bytes'] / 1e9:.2f} GB"
            rows.append(row("2a", f"one Dense all-layers epoch ({size}): seconds, ours vs naive (.npy + DataLoader + padding, fp32)",
                            epoch, n_ep, n_ep / epoch, lim_t, lim_t / epoch if lim_t else None,
                            "<= 3 s and >= 4x naive", _status(epoch <= 3.0 and n_ep / epoch >= 4.0),
                            note="epochs: " + ", ".join(f"{d:.2f}" for d in ep) + f" s (best after the first); load (to_packed) {ours['load_seconds']:.1f} s"))
            cp = tr.get("ours_copied", {})
            if cp and not _err(cp):
                cep = cp["epoch_seconds"]
                c_epoch = min(cep[1:]) if len(cep) > 1 else cep[0]
                mapped = ours.get("data_access", {}).get("mapped")
                rows.append(row("2a'", "the same epoch, frames mixed from the shards' memory maps (ours) vs every batch copied out of them first",
                                epoch, c_epoch, c_epoch / epoch, None, None, "", "info",
                                note=f"ours read {'from memory maps' if mapped else 'by copies (no map)'}; copied epochs: "
                                + ", ".join(f"{d:.2f}" for d in cep) + " s"))
            rows.append(row("2b", "Dense epoch throughput: frames/s",
                            frames / epoch, naive["frames"] / n_ep, n_ep / epoch * frames / max(naive["frames"], 1),
                            frames / lim_t if lim_t else None, lim_t / epoch if lim_t else None, "", "info",
                            note=tr.get("limit", {}).get("model", "")))
        if eqv and not _err(eqv):
            rows.append(row("2c", "naive model = our model: max abs output difference with the same weights",
                            eqv["max_abs_diff"], None, None, None, None, "<= 1e-4 (shapes equal)",
                            _status(eqv["max_abs_diff"] <= 1e-4 and eqv["shape_ours"] == eqv["shape_naive"]),
                            note=f"{eqv['n']} utterances, outputs up to {eqv['max_abs_output']:.2f}"))

    # ---------------------------------------------------------------- 3 grid
    if "grid" in parts:
        g = R.get("grid", {})
        if _err(g) or not g:
            rows.append(row("3", "grid search", status="failed", note=_err(g) or "no result"))
        else:
            rows.append(row("3a", f"GridSearchCV {g['n_points']} points x GroupKFold({g['folds']}) x {g['epochs_per_fit']} epochs, Dense all layers: wall s",
                            g["wall_seconds"], None, None, None, None, "report", "info",
                            note=f"{g['epochs_run']} epochs run ({g['fits']} fits); {g['epoch_seconds_total']:.1f} s in epochs, {g['outside_epochs_seconds']:.1f} s outside (predict, score, set-up)"))
            rows.append(row("3b", "epoch time per training frame, inside the grid vs standalone",
                            g["per_frame_epoch_grid"] * 1e6, g["per_frame_epoch_standalone"] * 1e6, g["epoch_ratio_grid_vs_standalone"],
                            None, None, "ratio <= 1.15", _status(g["epoch_ratio_grid_vs_standalone"] <= 1.15),
                            note="microseconds per frame"))
            if "frames_read_per_trained_frame" in g:
                rows.append(row("3c", "frame rows read from the shards per frame trained (standalone fit + whole grid, predictions included)",
                                g["frames_read_per_trained_frame"], None, None, None, None, "report (no copy of the store)", "info",
                                note=f"{g['frames_read'] / 1e6:.1f} M rows read in place; the store is never loaded whole"))
            else:
                rows.append(row("3c", "full reads of the cache during the standalone fit + whole grid",
                                g["cache_loads"], None, None, None, None, "1 (one shared copy)", _status(g["cache_loads"] == 1),
                                note=f"{g['cache_load_seconds']:.1f} s"))

    # ---------------------------------------------------------------- 4 reading
    if "reading" in parts:
        rd = R.get("reading", {})
        for mode in ("warm", "cold"):
            o = rd.get(f"ours-{mode}", {})
            if _err(o) or not o:
                rows.append(row("4", f"reading {mode}", status="failed", note=_err(o) or "no result"))
                continue
            for k, base in (("npy", ".npy per utterance"), ("joblib", "joblib pickle per utterance")):
                b = rd.get(f"{k}-{mode}", {})
                if _err(b) or not b:
                    continue
                rows.append(row("4" + ("a" if mode == "warm" else "b"), f"one shuffled all-layer epoch, {mode}: seconds, ours vs {base} (float32)",
                                o["seconds"], b["seconds"], b["seconds"] / o["seconds"], None, None, "report", "info",
                                note=f"ours reads {o.get('stored_bytes', 0) / 1e9:.2f} GB (float16), {k} {b['bytes'] / 1e9:.2f} GB"
                                + (f"; ours = {o['read_seconds']:.1f} s reading (to_packed) + {o['convert_seconds']:.1f} s numpy float16->float32" if "read_seconds" in o else "")))
            lz = rd.get(f"ours_lazy-{mode}", {})
            if lz and not _err(lz):
                rows.append(row("4" + ("a" if mode == "warm" else "b"), f"one shuffled all-layer epoch, {mode}: seconds, ours lazy X[i] vs ours to_packed",
                                lz["seconds"], o["seconds"], o["seconds"] / lz["seconds"], None, None, "", "info"))

    # ---------------------------------------------------------------- 5 memory
    if "extraction" in parts:
        ex = R.get("extraction", {})
        a, b = _get(ex, "ours_all", "_proc", "peak_rss_bytes"), _get(ex, "naive", "_proc", "peak_rss_bytes")
        if a and b:
            rows.append(row("5a", "peak RSS, extraction: ours (wav2vec2 + MFCC + eGeMAPS) vs naive", fmt(a, "GB"), fmt(b, "GB"), a / b, None, None, "report", "info"))
    if "training" in parts:
        a, b = _get(tr, "ours", "_proc", "peak_rss_bytes"), _get(tr, "naive", "_proc", "peak_rss_bytes")
        anon = _get(tr, "ours", "_proc", "peak_anon_bytes")
        data = _get(tr, "ours", "data_bytes")
        if a and b:
            rows.append(row("5b", "peak RSS, training: ours vs naive", fmt(a, "GB"), fmt(b, "GB"), a / b, None, None, "report", "info",
                            note=f"ours: anonymous peak {fmt(anon, 'GB')}, frame data {fmt(data, 'GB')} (the rest of VmHWM is memory-mapped shard pages)"))
    if "memory" in parts:
        m = R.get("memory", {})
        full, half = tr.get("ours", {}), m.get("ours", {})
        if _err(full, half) or not full or not half:
            rows.append(row("5c", "training memory vs utterance count", status="failed", note=_err(full, half) or "needs the training part"))
        else:
            of = full["_proc"]["peak_anon_bytes"] - full["data_bytes"]
            oh = half["_proc"]["peak_anon_bytes"] - half["data_bytes"]
            dd = full["data_bytes"] - half["data_bytes"]
            slope = (of - oh) / dd if dd > 0 else None
            rows.append(row("5c", f"training memory beyond the data: {full['n_utterances']} vs {half['n_utterances']} utterances (anonymous peak - frame data)",
                            fmt(of, "GB"), fmt(oh, "GB"), None, None, None, "grows < 10 % of the extra data",
                            _status(slope is not None and slope < 0.10),
                            note=f"extra data {fmt(dd, 'GB')}, extra overhead {fmt(of - oh, 'GB')} ({fmt(slope, '%')})"))

    # ---------------------------------------------------------------- 6 GPU
    if "gpu" in parts:
        from benchmarks.gpu_rows import report_rows as gpu_rows

        rows += gpu_rows(R.get("gpu", {}), row)

    # ---------------------------------------------------------------- 7 distributed (Dask)
    if "distributed" in parts:
        from benchmarks.distributed import report_rows

        rows += report_rows(R.get("distributed", {}), row)
    return rows


def _cell(x: str) -> str:
    return str(x).replace("\n", " ").replace("|", "\\|")


def markdown_table(rows: list[dict]) -> str:
    head = "| # | figure | ours | baseline | ratio | limit | of limit | target | status | note |\n|---|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        frac, ratio = r["fraction_of_limit"], r["ratio"]
        cells = [
            str(r["id"]),
            r["figure"],
            fmt(r["ours"]),
            fmt(r["baseline"]),
            fmt(ratio, "x") if isinstance(ratio, float) else fmt(ratio),
            fmt(r["limit"]),
            fmt(frac, "%") if isinstance(frac, float) else fmt(frac),
            r["target"],
            f"**{r['status']}**" if r["status"] == "NOT MET" else r["status"],
            r["note"],
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return head + "\n".join(lines) + "\n"


def publish(R: dict, text: str, out: Path) -> None:
    """Print a standalone benchmark's table and write its results ``R`` as JSON to ``out``."""
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(R, indent=1, default=str))
    print(f"JSON: {out}")


def write_section(path: Path, begin: str, end: str, text: str) -> Path:
    """Replace the text between the markers ``begin`` and ``end`` of ``path`` (appended when absent).

    Each standalone benchmark (``benchmarks.heads``, ``benchmarks.handcrafted``) keeps its table
    in its own section of docs/benchmarks.md; what is outside the markers is left as it is.
    """
    path = Path(path)
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}{end}\n"
    if begin in doc and end in doc:
        a, b = doc.index(begin), doc.index(end) + len(end)
        doc = doc[:a] + block.rstrip("\n") + doc[b:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block
    path.write_text(doc)
    return path


def machine_lines(R: dict) -> str:
    m = R.get("machine", {})
    cpu = m.get("cpu", {})
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in (cpu.get("flags") or {}).items())
    mm = m.get("matmul", {})
    rates = ", ".join(
        f"{p} {fmt(_get(mm, p, 'gflops_best'))} GFLOP/s (median {fmt(_get(mm, p, 'gflops_median'))}; one thread {fmt(_get(m, 'matmul_1thread', p, 'gflops_best'))})"
        for p in ("fp32", "bf16")
    )
    v = m.get("versions", {})
    vers = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "transformers", "numpy", "h5py", "sklearn") if k in v)
    mem = m.get("memory", {})
    load = R.get("load", {})
    lines = [
        f"- date: {R.get('date', '-')}; command: `{R.get('command', '')}`; wall time {fmt(R.get('wall_seconds'))} s",
        f"- machine: {cpu.get('model', '?')}, {cpu.get('usable_cores')} usable cores ({cpu.get('logical_cores')} logical), "
        f"{fmt(cpu.get('mem_total_gib'))} GiB RAM; torch threads {m.get('torch_threads')}; OMP_WAIT_POLICY {m.get('omp_wait_policy') or 'unset'}; "
        f"GPU: {'yes' if _get(m, 'gpu', 'available') else 'none'}",
        f"- CPU flags: {flags}; oneDNN native bf16: {m.get('onednn_native_bf16')}",
        f"- measured limits: matmul {mm.get('fp32', {}).get('n', 2048)}x{mm.get('fp32', {}).get('n', 2048)} on {m.get('torch_threads')} threads: {rates}; "
        f"memory read {fmt(mem.get('read_gbps_best'))} GB/s",
        f"- versions: {vers}",
        f"- machine load: load average {', '.join(fmt(x) for x in (load.get('start') or []))} at the start, "
        f"{', '.join(fmt(x) for x in (load.get('end') or []))} at the end; other processes kept {fmt(load.get('others_cores_mean'))} cores busy on average "
        f"(max {fmt(load.get('others_cores_max'))}) while the parts ran"
        + (f", and the measured processes got {fmt(load.get('own_cores_mean'))} cores (their CPU time / wall time)" if load.get("own_cores_mean") else "")
        + (" -- **the machine was shared: timings are noisy**" if (load.get("others_cores_mean") or 0) > 0.2 else ""),
    ]
    from benchmarks.gpu_rows import machine_line as gpu_line

    if gpu_line(R.get("gpu") or {}):
        lines.insert(2, gpu_line(R["gpu"]))
    if _get(R, "options", "quick"):
        lines.insert(0, "- **--quick run: tiny sizes (tiny model, 13 x 32 features); the statuses are not meaningful**")
    return "\n".join(lines) + "\n"


def render(R: dict, rows: list[dict]) -> str:
    return machine_lines(R) + "\n" + markdown_table(rows)


def write_json(R: dict, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"benchmarks-{stamp}.json"
    text = json.dumps(R, indent=1, default=str)
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    return path


DOC_HEAD = """# Benchmarks

The performance targets of featcache (extraction) and estimators (training), measured against
the peers' plain approaches and against this machine's own limits, by one command:

```bash
python -m benchmarks --corpus ../shared/corpora/ravdess-speech-16k --write-doc   # everything, ~15-20 min on 2 cores
python -m benchmarks --quick                                                        # tiny sizes, synthetic audio, ~1 min
python -m benchmarks --only extraction,training --extract-files 60 --train-scale 0.5
```

Without `--corpus` the audio is synthetic, RAVDESS-named, with RAVDESS's length distribution
(2.9-5.3 s, mean 3.7 s). Options: `--only machine,extraction,training,grid,reading,memory,gpu,distributed`,
`--extract-files N` (files of the corpus extracted, spread over actors; default 60),
`--train-scale F` (share of the 1440 utterances in the training cache), `--memory-scale F`,
`--train-epochs`, `--grid-epochs`, `--threads N` (default: the usable cores),
`--precision fastest|fp32|bf16` (ours; `fastest` times both on a few files first),
`--omp-wait-policy passive|active|default` (default passive, for ours and the baselines alike: on a
machine shared with other busy processes libgomp's spinning threads make torch up to ~10x slower),
`--workers N` (featcache decoding threads), `--out DIR` (JSON, default `runs/benchmarks`),
`--workdir DIR --keep` (keep and reuse the generated data), `--write-doc [PATH]`,
`--from-json FILE` (re-print / re-write the table of a saved run without measuring).

What is measured (details in each module's docstring under `benchmarks/`):

* **Limits** come from the same run: torch matmul GFLOP/s of 2048 x 2048 matrices in fp32 and
  bf16 on the torch threads used (best of 5 rounds), a memory read pass, and FLOPs counted
  analytically from the model config (`benchmarks/flops.py`: the 7 CNN conv layers, feature
  projection, positional convolution and 12 transformer blocks including the two attention
  products; torch's `FlopCounterMode` agrees on everything but the attention products, which it
  does not see inside CPU flash attention -- the tests check this). Extraction limit =
  matmul rate / FLOPs per audio second. Training limit = training FLOPs of the dense layers
  (forward, weight and input gradients, layer-weight gradient; `dense_flops_per_frame`) /
  fp32 matmul rate + two passes over the float16 frames / memory read bandwidth.
* **Model**: a randomly initialised full-size `Wav2Vec2Config()` (wav2vec2-base shape) saved
  with `save_pretrained`; speed does not depend on the weights.
* **Naive baselines** (`benchmarks/naive.py`, labelled NAIVE): per-file transformers
  extraction in fp32 with `np.save`; per-utterance float32 `.npy` + `Dataset`/`DataLoader` +
  pad-to-longest collate + the same Dense model (checked equal to ours with the same weights,
  row 2c) + Adam, batch 32; per-utterance `.npy` / joblib reading.
* **Training data**: a real featcache cache of random float16 states, 13 x 768, 50 frames per
  audio second of each RAVDESS file (1440 utterances, ~265k frames, 5.3 GB), written by
  `featcache.pipeline.extract` with a stand-in extractor (`benchmarks/data.py`).
* Every measured part runs in its own process: peak RSS (`VmHWM`, and the anonymous peak
  sampled every 20 ms) and the load other processes put on the machine are recorded.

"""


def write_doc(path: Path, R: dict, rows: list[dict]) -> Path:
    """Write the results between the markers of ``path`` (the rest of the file is kept)."""
    path = Path(path)
    body = f"{BEGIN}\n## Results ({R.get('date', '')})\n\n{render(R, rows)}\n{END}\n"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", lambda _: body, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + body
    else:
        text = DOC_HEAD + body
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
