"""The training loop, split into small overridable steps, and its callbacks.

:class:`TrainingLoop` is mixed into the estimators (skorch-like): ``fit`` calls
:meth:`TrainingLoop._fit_loop`, which calls, per epoch, :meth:`_iter_batches` and
:meth:`_train_step` on the training utterances, :meth:`_valid_step` on the validation
utterances, then :meth:`_on_epoch_end`, which records the epoch in ``history_`` and runs
the callbacks. The estimator supplies ``_make_module``, ``_make_optimizer``,
``_split_validation``, ``_compute_loss`` and ``_valid_score``.

Callbacks are :class:`Callback` objects or plain callables ``f(estimator, record)``
(called at the end of every epoch); returning True from either stops training. Early
stopping is the :class:`EarlyStopping` callback, which the estimators add themselves when
there is validation data; checkpoint averaging (Morais et al. 2022: the weights of the N
best epochs averaged) is the :class:`CheckpointAveraging` callback, added for
``average_checkpoints=N``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ._batch import Batch, BatchPlan

__all__ = ["Callback", "CheckpointAveraging", "EarlyStopping", "EpochLogger", "TrainingLoop"]

EpochRecord = dict[str, Any]


class Callback:
    """Base class of callbacks; every hook is optional."""

    def on_train_begin(self, estimator: Any) -> None:
        """Called once before the first epoch (reset state here)."""

    def on_epoch_end(self, estimator: Any, record: EpochRecord) -> bool | None:
        """Called after every epoch with its history record; return True to stop."""
        return None

    def on_train_end(self, estimator: Any) -> None:
        """Called once after the last epoch."""


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[Any, EpochRecord], bool | None]) -> None:
        self.fn = fn

    def on_epoch_end(self, estimator: Any, record: EpochRecord) -> bool | None:
        return self.fn(estimator, record)


class EarlyStopping(Callback):
    """Stop when the monitored value has not improved for ``patience`` epochs.

    Keeps a copy of the module's state at the best epoch and restores it at the end
    (``restore_best``); sets ``estimator.best_epoch_`` (1-based).

    Parameters
    ----------
    patience : int
        Epochs without improvement tolerated.
    monitor : str
        Key of the epoch record (``"valid_loss"`` or ``"valid_score"``).
    lower_is_better : bool
    min_delta : float
        Smallest change counted as an improvement.
    restore_best : bool
    """

    def __init__(
        self,
        patience: int = 4,
        monitor: str = "valid_loss",
        lower_is_better: bool = True,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        self.patience = patience
        self.monitor = monitor
        self.lower_is_better = lower_is_better
        self.min_delta = min_delta
        self.restore_best = restore_best

    def on_train_begin(self, estimator: Any) -> None:
        self.best_value_ = np.inf if self.lower_is_better else -np.inf
        self.best_epoch_: int | None = None
        self.best_state_: dict[str, torch.Tensor] | None = None
        self.wait_ = 0

    def _improved(self, value: float) -> bool:
        if not np.isfinite(value):
            return False
        if self.lower_is_better:
            return value < self.best_value_ - self.min_delta
        return value > self.best_value_ + self.min_delta

    def on_epoch_end(self, estimator: Any, record: EpochRecord) -> bool:
        value = float(record[self.monitor])
        if self._improved(value) or self.best_epoch_ is None:
            self.best_value_ = value
            self.best_epoch_ = int(record["epoch"])
            if self.restore_best:
                self.best_state_ = {k: v.detach().clone() for k, v in estimator.module_.state_dict().items()}
            self.wait_ = 0
            record["best"] = True
            return False
        self.wait_ += 1
        return self.wait_ >= self.patience

    def on_train_end(self, estimator: Any) -> None:
        if self.restore_best and self.best_state_ is not None:
            estimator.module_.load_state_dict(self.best_state_)
        estimator.best_epoch_ = self.best_epoch_
        self.best_state_ = None


class CheckpointAveraging(Callback):
    """Average the weights of the ``n`` best epochs (Morais et al. 2022, sec. 2.3).

    After every epoch the module's state is kept (a copy on the CPU) when it is among the
    ``n`` best so far by ``monitor``; at the end of training the module gets the
    element-wise mean of the kept states. Parameters that do not train (``requires_grad``
    False when training begins: a frozen feature encoder) are neither copied nor touched;
    integer buffers (BatchNorm's ``num_batches_tracked``) take the best epoch's value.
    Without validation data (``monitor`` is None in the records) the last ``n`` epochs
    are averaged. Sets ``estimator.averaged_epochs_`` (1-based, ascending) and marks those
    records of ``history_`` with ``"averaged": True``.

    Parameters
    ----------
    n : int
        Checkpoints averaged (fewer when training stops earlier).
    monitor : str
        Key of the epoch record (``"valid_score"``: accuracy or CCC).
    lower_is_better : bool
    """

    def __init__(self, n: int = 5, monitor: str = "valid_score", lower_is_better: bool = False) -> None:
        self.n = n
        self.monitor = monitor
        self.lower_is_better = lower_is_better

    def on_train_begin(self, estimator: Any) -> None:
        module = estimator.module_
        frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
        self.keys_ = [k for k in module.state_dict() if k not in frozen]
        self.kept_: list[tuple[tuple[float, int], dict[str, torch.Tensor]]] = []

    def on_epoch_end(self, estimator: Any, record: EpochRecord) -> None:
        value = record.get(self.monitor)
        if value is None:
            rank = (0.0, int(record["epoch"]))  # no validation: the latest epochs win
        else:
            value = float(value)
            if not np.isfinite(value):
                return None
            rank = (-value if self.lower_is_better else value, int(record["epoch"]))
        if len(self.kept_) >= int(self.n) and rank <= min(r for r, _ in self.kept_):
            return None
        state = estimator.module_.state_dict()
        self.kept_.append((rank, {k: state[k].detach().to("cpu", copy=True) for k in self.keys_}))
        if len(self.kept_) > int(self.n):
            self.kept_.remove(min(self.kept_, key=lambda item: item[0]))
        return None

    def on_train_end(self, estimator: Any) -> None:
        if not self.kept_:
            return
        states = [s for _, s in self.kept_]
        best = max(self.kept_, key=lambda item: item[0])[1]
        module = estimator.module_
        current = module.state_dict()
        averaged = {}
        for k in self.keys_:
            if best[k].is_floating_point():
                mean = torch.stack([s[k].to(torch.float64) for s in states]).mean(0)
                averaged[k] = mean.to(dtype=current[k].dtype, device=current[k].device)
            else:
                averaged[k] = best[k].to(current[k].device)
        missing, unexpected = module.load_state_dict(averaged, strict=False)
        if unexpected:  # pragma: no cover - the keys come from the module itself
            raise RuntimeError(f"checkpoint averaging: unexpected keys {unexpected[:3]}")
        epochs = sorted(rank[1] for rank, _ in self.kept_)
        estimator.averaged_epochs_ = epochs
        for record in getattr(estimator, "history_", []):
            if int(record["epoch"]) in epochs:
                record["averaged"] = True
        self.kept_ = []


class EpochLogger(Callback):
    """Print one line per epoch (used when ``verbose > 0``)."""

    def on_epoch_end(self, estimator: Any, record: EpochRecord) -> None:
        parts = [f"epoch {record['epoch']:3d}", f"train_loss {record['train_loss']:.4f}"]
        if record.get("valid_loss") is not None:
            parts.append(f"valid_loss {record['valid_loss']:.4f}")
            parts.append(f"valid_score {record['valid_score']:.4f}")
        parts.append(f"{record['dur']:.2f}s")
        if record.get("best"):
            parts.append("*")
        print(type(estimator).__name__, " ".join(parts), flush=True)
        return None


class TrainingLoop:
    """Mixin holding the epoch loop; see the module docstring for the steps."""

    # -- hooks the estimator provides -------------------------------------------------
    def _make_module(self, config: dict) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _valid_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:  # pragma: no cover
        raise NotImplementedError

    # -- overridable steps ------------------------------------------------------------
    def _make_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        """Adam with learning rate ``lr``."""
        return torch.optim.Adam(module.parameters(), lr=float(self.lr))

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if getattr(self, "precision", "fp32") == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _make_callbacks(self, has_validation: bool) -> list[Callback]:
        cbs: list[Callback] = []
        n_avg = getattr(self, "average_checkpoints", None)
        averaging = n_avg is not None and int(n_avg) > 1
        if has_validation:
            # averaging replaces the weights anyway: no copy of the best epoch is needed
            cbs.append(EarlyStopping(patience=int(self.patience), restore_best=not averaging))
        if averaging:
            cbs.append(CheckpointAveraging(int(n_avg)))
        for cb in self.callbacks or ():
            cbs.append(cb if isinstance(cb, Callback) else _FunctionCallback(cb))
        if self.verbose:
            cbs.append(EpochLogger())
        return cbs

    def _iter_batches(
        self, plan: BatchPlan, index: np.ndarray, rng: np.random.Generator | None = None
    ) -> Iterator[Batch]:
        """Batches of ``batch_size`` utterances; shuffled (training) when ``rng`` is given."""
        return plan.iter_batches(index, int(self.batch_size), rng=rng, merge_singleton=rng is not None)

    def _train_step(self, batch: Batch, targets: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One optimisation step on a batch; returns the batch loss."""
        module = self.module_
        module.train()
        optimizer.zero_grad(set_to_none=True)
        with self._autocast(targets.device):
            outputs = module(batch)
        loss = self._compute_loss(outputs.float(), targets)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def _valid_step(self, batch: Batch) -> torch.Tensor:
        """Raw outputs (batch_size, n_outputs) of a batch in evaluation mode."""
        module = self.module_
        module.eval()
        with torch.no_grad(), self._autocast(batch.lengths.device):
            return module(batch).float()

    def _on_epoch_end(self, record: EpochRecord, callbacks: list[Callback]) -> bool:
        """Record the epoch and run the callbacks; True when one asks to stop."""
        self.history_.append(record)
        stop = False
        for cb in callbacks:
            stop = bool(cb.on_epoch_end(self, record)) or stop
        return stop

    # -- the loop -------------------------------------------------------------------------
    def _evaluate(self, plan: BatchPlan, index: np.ndarray, targets: torch.Tensor) -> tuple[float, float]:
        outs = [self._valid_step(b) for b in self._iter_batches(plan, index)]
        outputs = torch.cat(outs)
        t = targets[torch.from_numpy(np.asarray(index, dtype=np.int64)).to(targets.device)]
        return float(self._compute_loss(outputs, t)), float(self._valid_score(outputs, t))

    def _fit_loop(
        self,
        train: tuple[BatchPlan, np.ndarray, torch.Tensor],
        valid: tuple[BatchPlan, np.ndarray, torch.Tensor] | None,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
    ) -> None:
        """Train ``module_`` for up to ``max_epochs`` epochs.

        Parameters
        ----------
        train, valid : (plan, index, targets)
            Utterances ``index`` of ``plan``; ``targets`` is indexed by plan position.
        optimizer : Optimizer
        rng : Generator
            Shuffles the training batches.
        """
        plan, index, targets = train
        callbacks = self._make_callbacks(valid is not None)
        self.history_ = []
        self.best_epoch_ = None
        self.__dict__.pop("averaged_epochs_", None)  # from an earlier fit
        for cb in callbacks:
            cb.on_train_begin(self)
        for epoch in range(1, int(self.max_epochs) + 1):
            t0 = time.perf_counter()
            total, count = 0.0, 0
            for batch in self._iter_batches(plan, index, rng):
                bidx = torch.from_numpy(batch.index).to(targets.device)
                loss = self._train_step(batch, targets[bidx], optimizer)
                total += loss * len(batch)
                count += len(batch)
            record: EpochRecord = {"epoch": epoch, "train_loss": total / max(count, 1)}
            if valid is not None:
                record["valid_loss"], record["valid_score"] = self._evaluate(*valid)
            else:
                record["valid_loss"] = record["valid_score"] = None
            record["dur"] = time.perf_counter() - t0
            if self._on_epoch_end(record, callbacks):
                break
        for cb in callbacks:
            cb.on_train_end(self)
        self.n_epochs_ = len(self.history_)
        if self.best_epoch_ is None:
            self.best_epoch_ = self.n_epochs_
        self.module_.eval()

