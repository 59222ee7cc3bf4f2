"""Where and how a self-supervised model runs: device and precision choice, strict fp32.

Shared by :class:`featcache.extractors.ssl.SSLExtractor` (and anything else that runs an
upstream model, such as fine-tuning). See the precision rules in
:mod:`featcache.extractors.ssl`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from featcache.errors import ParameterError

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "encode_padded",
    "length_groups",
    "native_bf16_cpu",
    "no_tf32",
    "records_by_hooks",
    "resolve_device",
    "resolve_precision",
    "to_device",
    "to_numpy",
]

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: Any) -> Any:
    import torch

    text = str(device).strip().lower() if isinstance(device, str) else device
    allowed = "'auto', 'cpu' or 'cuda' (or 'cuda:N')"
    if isinstance(text, torch.device):
        text = str(text)
    if not isinstance(text, str):
        raise ParameterError("device", allowed, device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ParameterError("device", f"{allowed}; CUDA is not available here", device)
        dev = torch.device(text)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(
                "device", f"{allowed} with N < {torch.cuda.device_count()}", device
            )
        return dev
    raise ParameterError("device", allowed, device)


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 instructions (AMX or AVX512-BF16), where bf16 beats fp32.

    Without them (AVX2-only machines) oneDNN emulates bf16, ~25x slower than fp32. Read from
    torch's CPU-feature checks (private helpers: False when this torch has none or they fail).
    """
    import torch

    try:
        return any(bool(getattr(torch.cpu, name)()) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
                   if hasattr(torch.cpu, name))
    except Exception:  # noqa: BLE001 - a hint only: no answer is "no"
        return False


def resolve_precision(precision: Any, device: Any) -> str:
    """The precision to run in; ``auto``: bf16 on a CUDA device that supports it, else fp32.

    ``auto`` stays fp32 on every CPU, even one with native bf16 (AVX512-BF16 / AMX, where bf16
    is ~4x faster): the same numbers on every machine, and a store resumed on another CPU
    keeps its precision. ``bf16`` is asked for explicitly there.
    """
    import torch

    allowed = "'fp32', 'bf16', 'fp16' or 'auto'"
    if not isinstance(precision, str) or precision.strip().lower() not in PRECISIONS:
        raise ParameterError("precision", allowed, precision)
    p = precision.strip().lower()
    cuda = device.type == "cuda"
    if p == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if p == "fp16" and not cuda:
        raise ParameterError(
            "precision", "'fp32' or 'bf16' on CPU (fp16 autocast needs a CUDA device)", precision
        )
    if p == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ParameterError(
            "precision", "'fp32' or 'fp16' on this GPU (it does not support bf16)", precision
        )
    return p


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Switch TF32 off for CUDA convolutions and matmuls (fp32 must mean fp32)."""
    import torch

    saved: list[tuple[Any, str, Any]] = []
    targets = [
        (torch.backends.cudnn.conv, "fp32_precision", "ieee"),
        (torch.backends.cuda.matmul, "fp32_precision", "ieee"),
    ]
    if not all(hasattr(obj, attr) for obj, attr, _ in targets):  # older torch
        targets = [
            (torch.backends.cudnn, "allow_tf32", False),
            (torch.backends.cuda.matmul, "allow_tf32", False),
        ]
    try:
        for obj, attr, value in targets:
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)
    except Exception:  # noqa: BLE001 - leave the flags alone when they cannot be set
        pass
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            with contextlib.suppress(Exception):
                setattr(obj, attr, value)


def records_by_hooks(model: Any) -> bool:
    """Whether the model records ``hidden_states`` with output-capturing hooks (transformers 5)."""
    recordable = getattr(type(model), "_can_record_outputs", None) or {}
    return "hidden_states" in recordable


def length_groups(frames: list[int], max_frames: int) -> list[list[int]]:
    """Indices sorted by frame count, cut so that ``len(group) * longest <= max_frames``."""
    groups: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(frames)), key=lambda k: frames[k]):
        if current and (len(current) + 1) * frames[i] > max_frames:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def encode_padded(model: Any, inputs: list[Any], cnn: Callable[[Any], Any] | None = None) -> tuple[Any, list[int]]:
    """All hidden states of several utterances, the transformer run once on padded frames.

    Raw audio is never padded: the first conv layer of base models has a GroupNorm over
    time, so padding would change every layer (reported: by 11-15 % of its largest value,
    even with an attention mask). The CNN feature encoder and the projection run per
    utterance; the projected frames are zero-padded and the transformer encoder runs once
    with a frame ``attention_mask``. The encoder zeroes the padded frames before the
    positional convolution (``hidden_states[~mask] = 0``: exactly the zero padding the
    convolution sees at the end of a lone utterance) and masks padded keys in every
    attention layer (WavLM too: ``key_padding_mask`` plus a relative position bias that only
    depends on frame distances). Frames past each utterance's length are to be discarded;
    the rest equals one-at-a-time extraction to float rounding (max abs difference < 1e-5 in
    fp32 on the test models).

    Parameters
    ----------
    model : transformers wav2vec2-family model
    inputs : list of tensor of shape (1, n_samples_i)
        Prepared waveforms on the model's device.
    cnn : callable, optional
        Replaces the model's CNN feature encoder: ``(1, n_samples)`` -> time-major
        ``(1, n_frames, conv_dim)`` (:class:`featcache.extractors._cpu_bf16.ConvEncoder`).

    Returns
    -------
    hidden : tensor of shape (n_layers, n_utterances, longest, dim), float32
    lengths : list of int
        Frames of each utterance (the rest of its row is padding).
    """
    import torch

    layers = list(model.encoder.layers)
    captured: list[Any] = []

    def capture(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if module is layers[0] and not captured:
            captured.append(args[0] if args else kwargs["hidden_states"])
        captured.append(output[0] if isinstance(output, tuple) else output)

    feats = []
    for x in inputs:
        f = cnn(x) if cnn is not None else model.feature_extractor(x).transpose(1, 2)
        p = model.feature_projection(f)
        feats.append((p[0] if isinstance(p, tuple) else p)[0])
    lengths = [int(f.shape[0]) for f in feats]
    padded = feats[0].new_zeros((len(feats), max(lengths), feats[0].shape[1]))
    mask = torch.zeros((len(feats), max(lengths)), dtype=torch.bool, device=padded.device)
    for b, f in enumerate(feats):
        padded[b, : lengths[b]] = f
        mask[b, : lengths[b]] = True
    if records_by_hooks(model):
        # transformers >= 5: hidden states are recorded by hooks on the encoder layers
        # (input of layer 0, then each layer's output); do the same.
        handles = [layer.register_forward_hook(capture, with_kwargs=True) for layer in layers]
        try:
            with warnings.catch_warnings():
                # WavLM hands torch a bool key_padding_mask with a float position bias;
                # torch warns about the mix, the result is right.
                warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask and attn_mask.*")
                model.encoder(padded, attention_mask=mask)
        finally:
            for h in handles:
                h.remove()
    else:  # transformers 4.x: the encoder returns them itself
        captured = list(model.encoder(padded, attention_mask=mask, output_hidden_states=True, return_dict=True).hidden_states)
    # one float32 copy of every state (not a float() copy and then a stack of those)
    out = torch.empty((len(captured), *captured[0].shape), dtype=torch.float32, device=captured[0].device)
    for i, h in enumerate(captured):
        out[i].copy_(h)
    return out, lengths


def to_device(x: Any, device: Any) -> Any:
    """A float32 numpy array as a tensor on ``device`` (pinned, non-blocking copy to CUDA)."""
    import torch

    t = torch.from_numpy(x)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def to_numpy(t: Any) -> Any:
    """A tensor as a float32 numpy array (through pinned memory from CUDA)."""
    import torch

    t = t.detach().float()
    if t.device.type == "cuda":
        buf = torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
        buf.copy_(t, non_blocking=True)
        torch.cuda.current_stream(t.device).synchronize()
        return buf.numpy()
    return t.contiguous().numpy()
