"""The table rows and the machine line of the GPU part (:mod:`benchmarks.gpu`).

Every ratio is formed here, from the figures and the limits measured in the same run
(``G["limits"]``): nothing is a constant. Rows: ``6`` the device, ``6a`` its matmul and copy
limits, ``6b``/``6c`` extraction (pipeline / model alone), ``6d``/``6e`` one Dense epoch
(seconds / frames per second), ``6f`` fine-tuning steps (one row per batch size).
"""

from __future__ import annotations

from typing import Any

NOT_MEASURED = "not measured (no GPU)"

#: The rows of the part, as they read when nothing was measured.
FIGURES = (
    ("6a", "GPU matmul limits: bf16 / tf32 / fp32 GFLOP/s"),
    ("6b", "wav2vec2-base extraction on the GPU, bf16, featcache.pipeline.extract: audio-s/s"),
    ("6c", "wav2vec2-base on the GPU alone (featcache batches, signals in memory), bf16: audio-s/s"),
    ("6d", "one Dense all-layers epoch on the GPU: seconds"),
    ("6e", "Dense epoch on the GPU: frames/s"),
    ("6f", "fine-tuning step on the GPU (FineTuneClassifier, bf16): audio-s/s per training step"),
)


def _rate(G: dict, kind: str) -> float | None:
    """Measured matmul GFLOP/s of ``kind`` (bf16, tf32, fp32), None when not measured."""
    return (((G.get("limits") or {}).get("matmul") or {}).get(kind) or {}).get("gflops_best")


def _missing(d: Any) -> tuple[str, str] | None:
    """(status, note) when a job failed or was skipped, else None."""
    if not isinstance(d, dict) or not d:
        return "not measured", "no result"
    if "error" in d:
        return "failed", str(d["error"])
    if "skipped" in d:
        return "not measured", f"skipped: {d['skipped']}"
    return None


def _f(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def machine_line(G: dict) -> str | None:
    """``- GPU: ...`` for the machine lines: the device, its versions and measured limits."""
    info = (G.get("limits") or {}).get("device")
    if not G.get("measured") or not info:
        return None
    mm, cp = (G.get("limits") or {}).get("matmul") or {}, (G.get("limits") or {}).get("copy") or {}
    n = (mm.get("bf16") or {}).get("n")
    mem = f", {info['memory_gib']:.0f} GiB" if info.get("memory_gib") else ""
    cap = f", compute capability {info['capability']}, {info.get('multiprocessors')} SMs" if info.get("capability") else ""
    smi = f"; nvidia-smi (driver, max SM clock, power limit): {info['nvidia_smi']}" if info.get("nvidia_smi") else ""
    return (f"- GPU: {info.get('name')}{mem}{cap}; torch {info.get('torch')}, CUDA {info.get('cuda')}, cuDNN {info.get('cudnn', '-')}{smi}; "
            f"measured matmul {n}x{n}: " + ", ".join(f"{k} {_f(_rate(G, k))} GFLOP/s" for k in ("bf16", "tf32", "fp32"))
            + f"; host-to-device copy {_f(cp.get('pinned_gbps_best'), 1)} GB/s pinned, {_f(cp.get('pageable_gbps_best'), 1)} GB/s pageable")


def report_rows(G: dict, row) -> list[dict]:
    """The rows of the part (``row`` is :func:`benchmarks.report.row`)."""
    if not G.get("measured"):
        rows = [row("6", "GPU", NOT_MEASURED, target="report", status="not measured", note=G.get("reason", ""))]
        return rows + [row(i, f, NOT_MEASURED, target="report", status="not measured") for i, f in FIGURES]
    info = (G.get("limits") or {}).get("device") or {}
    skipped = "; ".join(f"{k}: {v}" for k, v in (G.get("skipped") or {}).items())
    rows = [row("6", f"GPU part on {info.get('name', G.get('device'))}" + (" (--quick: tiny sizes)" if G.get("quick") else ""),
                f"{_f(G.get('wall_seconds'))} s", None, None, f"{_f(G.get('budget_s'))} s", None, "report", "info",
                note=f"wall time of the part within its budget{'; ' + skipped if skipped else ''}")]
    rows += _limit_rows(G, row) + _extraction_rows(G, row) + _dense_rows(G, row) + _finetune_rows(G, row)
    return rows


def _limit_rows(G: dict, row) -> list[dict]:
    lim = G.get("limits")
    miss = _missing(lim)
    if miss:
        return [row("6a", FIGURES[0][1], status=miss[0], note=miss[1])]
    mm, cp = lim.get("matmul", {}), lim.get("copy", {})
    n = (mm.get("bf16") or {}).get("n")
    rounds = (mm.get("bf16") or {}).get("rounds")
    return [row("6a", f"GPU matmul {n}x{n} limits (best of {rounds} rounds, synchronised): bf16 / tf32 / fp32 GFLOP/s",
                " / ".join(_f(_rate(G, k)) for k in ("bf16", "tf32", "fp32")), None, _div(_rate(G, "bf16"), _rate(G, "fp32")), None, None,
                "report", "info", note="ratio: bf16 / fp32; medians " + " / ".join(_f((mm.get(k) or {}).get("gflops_median")) for k in ("bf16", "tf32", "fp32"))
                + f"; host-to-device {_f(cp.get('pinned_gbps_best'), 1)} GB/s pinned, {_f(cp.get('pageable_gbps_best'), 1)} GB/s pageable")]


def _extraction_rows(G: dict, row) -> list[dict]:
    ex = G.get("extraction")
    miss = _missing(ex)
    if miss:
        return [row(i, f, status=miss[0], note=miss[1]) for i, f in FIGURES[1:3]]
    fps = (ex.get("flops_per_audio_second") or {}).get("total")
    kind = "bf16" if ex.get("precision") in ("bf16", "fp16") else "fp32"
    rate = _rate(G, kind)
    limit = _div(rate * 1e9 if rate else None, fps)
    hidden = (ex.get("model") or {}).get("hidden_size")
    model = "wav2vec2-base" if hidden == 768 else f"tiny wav2vec2 (hidden {hidden})"
    data = "corpus audio" if G.get("audio") != "synthetic" else "synthetic audio"
    what = f"{ex.get('n_files')} files, {_f(ex.get('audio_seconds'))} s of {data}, random weights"
    lim_note = f"limit = {_f(rate)} GFLOP/s {kind} / {_f(fps / 1e9 if fps else None, 2)} GFLOP per audio-s"
    best_model = max(ex.get("model_audio_s_per_s") or [0.0]) or None
    pipe = ex.get("audio_s_per_s")
    return [
        row("6b", f"{model} extraction on the GPU, {ex.get('precision')}, featcache.pipeline.extract ({what}): audio-s/s",
            pipe, best_model, _div(pipe, best_model), limit, _div(pipe, limit), "report", "info",
            note=f"baseline: the model alone (6c); {lim_note}; length-sorted batches of <= {ex.get('max_batch_frames')} frames, "
            f"{ex.get('workers')} decoding workers; {ex.get('done')} done, {_count(ex.get('failed'))} failed; peak GPU memory {_gib(ex.get('peak_device_bytes'))}"),
        row("6c", f"{model} alone on the GPU ({ex.get('precision')}, SSLExtractor.batch over the same signals in memory): audio-s/s",
            best_model, None, None, limit, _div(best_model, limit), "report", "info",
            note=f"best of {len(ex.get('model_audio_s_per_s') or [])} passes after a warm-up; {lim_note}"),
    ]


def _count(x: Any) -> Any:
    return len(x) if isinstance(x, (dict, list, tuple)) else x


def _gib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**30:.1f} GiB"


def _dense_rows(G: dict, row) -> list[dict]:
    from benchmarks.flops import dense_flops_per_frame

    d = G.get("dense")
    miss = _missing(d)
    if miss:
        return [row(i, f, status=miss[0], note=miss[1]) for i, f in FIGURES[3:5]]
    rows = []
    for p, r in (d.get("runs") or {}).items():
        miss = _missing(r)
        if miss:
            rows.append(row("6d", f"one Dense all-layers epoch on the GPU ({p})", status=miss[0], note=miss[1]))
            continue
        ep = r["epoch_seconds"]
        epoch = min(ep[1:]) if len(ep) > 1 else ep[0]
        per_frame = dense_flops_per_frame(d["n_layers"], d["dim"], tuple(r["hidden_sizes"]), r["n_classes"])["total"]
        rate, h2d = _rate(G, r["limit"]), ((G.get("limits") or {}).get("copy") or {}).get("pinned_gbps_best")
        t_compute = _div(per_frame * d["frames"], rate * 1e9 if rate else None)
        t_copy = _div(d["data_bytes"], h2d * 1e9 if h2d else None)
        t_limit = t_compute + (t_copy or 0.0) if t_compute is not None else None
        size = f"{d['n_utterances']} utt., {d['frames'] / 1e3:.0f}k frames x {d['n_layers']} x {d['dim']} {d['data_dtype']} = {d['data_bytes'] / 1e9:.2f} GB"
        rows.append(row("6d", f"one Dense all-layers epoch on the GPU, {p} ({size}): seconds", epoch, None, None, t_limit, _div(t_limit, epoch),
                        "report", "info", note="epochs: " + ", ".join(f"{x:.2f}" for x in ep) + f" s (best after the first); limit = compute "
                        f"{_f(t_compute, 4)} s ({per_frame / 1e6:.2f} MFLOP/frame / {_f(rate)} GFLOP/s {r['limit']}) + one host-to-device pass "
                        f"{_f(t_copy, 3)} s; frames read as {r.get('access')}; peak GPU memory {_gib(r.get('peak_device_bytes'))}"))
        fps_limit = _div(rate * 1e9 if rate else None, per_frame)
        rows.append(row("6e", f"Dense epoch on the GPU, {p}: frames/s vs the compute limit", d["frames"] / epoch, None, None, fps_limit,
                        _div(d["frames"] / epoch, fps_limit), "report", "info",
                        note=f"limit = {_f(rate)} GFLOP/s {r['limit']} / {per_frame / 1e6:.2f} MFLOP per frame (compute only, no copies)"))
    return rows


def _finetune_rows(G: dict, row) -> list[dict]:
    ft = G.get("finetune")
    miss = _missing(ft)
    if miss:
        return [row("6f", FIGURES[5][1], status=miss[0], note=miss[1])]
    rows = []
    for r in ft.get("runs") or []:
        miss = _missing(r)
        if miss:
            rows.append(row("6f", f"fine-tuning step of ~{r.get('target_seconds')} s of audio", status=miss[0], note=miss[1]))
            continue
        rate = _rate(G, r["limit"])
        lim_s = _div(r["train_flops_3x"], rate * 1e9 if rate else None)
        frozen_s = _div(r["train_flops_frozen_cnn"], rate * 1e9 if rate else None)
        step = r["step_seconds_median"]
        model = "wav2vec2-base" if ft.get("hidden_size") == 768 else f"tiny wav2vec2 (hidden {ft.get('hidden_size')})"
        rows.append(row("6f", f"fine-tuning step, {model}, {r['precision']}, {r['n_files']} files = {r['audio_seconds']:.1f} s of audio per step"
                        " (FineTuneClassifier, mean head, CNN frozen): audio-s/s", r["audio_s_per_s"], None, None,
                        _div(r["audio_seconds"], lim_s), _div(lim_s, step), "report", "info",
                        note=f"{r['steps_per_second']:.2f} steps/s (median of epochs 2+: " + ", ".join(f"{x:.3f}" for x in r["step_seconds"])
                        + f" s); limit = 3 x {r['forward_flops'] / 1e9:.3g} GFLOP forward / {_f(rate)} GFLOP/s {r['limit']} = {_f(lim_s, 4)} s;"
                        f" with the frozen CNN {_f(frozen_s, 4)} s ({_pct(_div(frozen_s, step))}); peak GPU memory {_gib(r.get('peak_device_bytes'))}"
                        + ("; only the warm-up epoch ran" if r.get("warm_up_only") else "")))
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} % of it"
