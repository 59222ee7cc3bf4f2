"""The torch module of the fine-tuning estimators: an upstream wav2vec2-family model and a head.

:class:`FineTuneNet` runs the upstream exactly as featcache extracts its layers
(:mod:`featcache.extractors.ssl`): the CNN feature encoder and the feature projection per
utterance (raw audio is never padded: the GroupNorm of base models would see the padding),
then the projected frames of a batch zero-padded and the transformer encoder run once with
a frame mask. So a fine-tuned upstream written back with ``save_upstream`` and cached by
``featcache extract --model DIR`` gives the layers the head was trained on.

Heads (``module_config["head"]``):

* ``"mean"`` -- mean of the last hidden state over the frames of each utterance, dropout,
  a linear output (Morais et al. 2022, Fig. 2);
* ``"dense"`` -- trainable weighted average of all hidden states (the ``num_hidden_layers +
  1`` layers featcache caches; :class:`estimators._modules.LayerMix`), per-frame dense
  layers (ReLU, dropout), mean pooling, a linear output (Pepino et al. 2021).

The weights of the head are everything outside ``upstream.``: :func:`head_state`.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ._modules import LayerMix
from ._ops import segment_pool

__all__ = ["FineTuneNet", "build_finetune_net", "upstream_config", "head_state", "head_shapes", "HEADS"]

HEADS = ("mean", "dense")


def upstream_config(model: Any) -> dict:
    """The JSON-able config of a transformers model (rebuilds it without weights)."""
    return json.loads(model.config.to_json_string(use_diff=False))


def _config_from_dict(d: dict) -> Any:
    from transformers import AutoConfig

    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


class _Head(nn.Module):
    """Per-frame dense layers (``sizes``, ReLU, dropout) then, after pooling, the output."""

    def __init__(self, dim: int, sizes: list[int], dropout: float, n_outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for h in sizes:
            layers += [nn.Linear(dim, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            dim = int(h)
        self.frames = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(dim, int(n_outputs))


def _head_parts(config: dict) -> tuple[nn.ModuleList, _Head]:
    dense = config["head"] == "dense"
    n_layers = int(config["n_layers"]) if dense else 1
    mixers = nn.ModuleList([LayerMix(n_layers, config["weighting"] if n_layers > 1 else None)])
    sizes = [int(h) for h in config["hidden_sizes"]] if dense else []
    return mixers, _Head(int(config["hidden_size"]), sizes, float(config["dropout"]), int(config["n_outputs"]))


def head_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the head's tensors (built on the meta device: no memory)."""
    with torch.device("meta"):
        mixers, head = _head_parts(config)
    parts = nn.ModuleDict({"mixers": mixers, "head": head})
    return {k: tuple(v.shape) for k, v in parts.state_dict().items()}


class FineTuneNet(nn.Module):
    """Upstream + head; ``forward(batch)`` gives outputs of shape (batch_size, n_outputs).

    Parameters
    ----------
    upstream : transformers model (``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``...)
    config : dict
        The ``module_config_`` (head, hidden_sizes, weighting, dropout, n_outputs, n_layers,
        hidden_size, freezing, gradient_checkpointing, spec_augment).
    """

    def __init__(self, upstream: Any, config: dict) -> None:
        super().__init__()
        self.upstream = upstream
        self.head_kind = config["head"]
        self.mixers, self.head = _head_parts(config)
        self.spec_augment = bool(config.get("spec_augment", False))
        self.cnn_frozen = bool(config["freeze_feature_encoder"])
        freeze_upstream(upstream, self.cnn_frozen, int(config["freeze_layers"]))
        if config.get("gradient_checkpointing"):
            # non-reentrant: the hooks that record the hidden states keep their gradients
            kwargs = {"use_reentrant": False}
            if hasattr(upstream, "activation_checkpointing_enable"):  # transformers >= 5.x
                upstream.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                upstream.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    # -- the upstream, as featcache runs it
    def _project(self, signals: list[torch.Tensor]) -> list[torch.Tensor]:
        up = self.upstream
        out = []
        for x in signals:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cnn_frozen):
                f = up.feature_extractor(x[None]).transpose(1, 2)
            p = up.feature_projection(f)
            out.append((p[0] if isinstance(p, tuple) else p)[0])
        return out

    def hidden_states(self, signals: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden states of a batch: ``(states, mask)``.

        ``states``: ``n_layers`` tensors of shape (batch, n_frames, hidden) for the dense
        head (input of block 1, then every block's output), else only the encoder's
        ``last_hidden_state``; ``mask``: (batch, n_frames) bool, True on real frames.
        """
        feats = self._project(signals)
        lengths = torch.tensor([f.shape[0] for f in feats], device=feats[0].device)
        padded = pad_sequence(feats, batch_first=True)
        mask = torch.arange(padded.shape[1], device=padded.device)[None] < lengths[:, None]
        up = self.upstream
        if self.training and self.spec_augment and hasattr(up, "_mask_hidden_states"):
            padded = up._mask_hidden_states(padded, attention_mask=mask)  # SpecAugment, as HF fine-tuning
        if self.head_kind != "dense":
            out = up.encoder(padded, attention_mask=mask)
            return [out[0] if isinstance(out, tuple) else out.last_hidden_state], mask
        layers = list(up.encoder.layers)
        captured: dict[int, torch.Tensor] = {}

        def capture(index: int):
            def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
                if index == 0:
                    captured[0] = args[0] if args else kwargs["hidden_states"]
                captured[index + 1] = output[0] if isinstance(output, tuple) else output

            return hook

        handles = [layer.register_forward_hook(capture(i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask and attn_mask.*")
                up.encoder(padded, attention_mask=mask)
        finally:
            for h in handles:
                h.remove()
        states = [captured[0]]
        for i in range(1, len(layers) + 1):
            states.append(captured.get(i, states[-1]))  # a block skipped by LayerDrop
        return states, mask

    def forward(self, batch: Any) -> torch.Tensor:
        states, mask = self.hidden_states(batch.signals)
        w = self.mixers[0].normalized_weights()
        h = states[0] if w is None else torch.einsum("l,lbtd->btd", w.to(states[0].dtype), torch.stack(states))
        frames = h[mask]  # (total_frames, hidden), utterance after utterance
        lengths = mask.sum(1)
        seg_ids = torch.repeat_interleave(torch.arange(len(lengths), device=h.device), lengths)
        offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
        frames = self.head.frames(frames)
        pooled = segment_pool(frames, seg_ids, offsets, lengths, "mean")
        if self.head_kind == "mean":  # the dense head's layers carry their own dropout
            pooled = self.head.dropout(pooled)
        return self.head.output(pooled)


def freeze_upstream(upstream: Any, feature_encoder: bool, n_blocks: int) -> None:
    """Freeze the CNN feature encoder and/or the first ``n_blocks`` transformer blocks.

    Freezing blocks also freezes what lies below them (feature projection, positional
    convolution, the mask embedding and, for post-LN base models, the encoder's input
    LayerNorm), so a frozen block's input never changes.
    """
    if feature_encoder:
        for p in upstream.feature_extractor.parameters():
            p.requires_grad_(False)
    if n_blocks <= 0:
        return
    below = [upstream.feature_projection, upstream.encoder.pos_conv_embed, *list(upstream.encoder.layers)[:n_blocks]]
    if not getattr(upstream.config, "do_stable_layer_norm", False) or n_blocks >= len(upstream.encoder.layers):
        below.append(upstream.encoder.layer_norm)
    for m in below:
        for p in m.parameters():
            p.requires_grad_(False)
    if getattr(upstream, "masked_spec_embed", None) is not None:
        upstream.masked_spec_embed.requires_grad_(False)


def build_finetune_net(config: dict, upstream: Any = None, feature_extractor: Any = None) -> FineTuneNet:
    """The module of ``config``; without ``upstream`` it is built (random) from the recorded
    transformers config, to receive a state dict (pickling), and the feature extractor
    (``net.feature_extractor``: the checkpoint's input normalisation) from its recorded settings."""
    if upstream is None:
        from transformers import AutoModel

        upstream = AutoModel.from_config(_config_from_dict(config["upstream_config"]))
    if feature_extractor is None:
        from transformers import Wav2Vec2FeatureExtractor

        feature_extractor = Wav2Vec2FeatureExtractor.from_dict(config["feature_extractor"])
    net = FineTuneNet(upstream, config)
    net.feature_extractor = feature_extractor
    return net


def head_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state of everything but the upstream (what ``weights.safetensors`` holds)."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith("upstream.")}
