"""THE training loop. Base, mid, SFT and RL all run through `Trainer.fit`.

A stage (train/base.py, mid.py, sft.py, rl.py) supplies only what differs (the `Stage` protocol
below; the optional hooks are read once, by `StageHooks.of`):
  - `name`, and `batches(cursor)`: a resumable iterator of Batch(inputs, targets, weights, cursor)
  - optionally `val_batches()`: a finite iterator for validation loss / bits-per-byte
  - optionally `evaluate(model) -> dict`: its own evals, run with the validation loss (every
    eval_every steps and at the end; RL's pass@k)
  - optionally `metrics() -> dict`: numbers logged with every step's loss (RL's mean reward)
  - optionally `in_loop`: evals on a schedule of their own (CORE + samples in base, ChatCORE in
    SFT; eval/in_loop.py), an `InLoop`: `due(step, last) -> bool`, asked after every step, and
    `run(model, step) -> dict`, run like every eval in eval mode and outside the training clock
  - optionally `reshards_cursors = True`: its batches() accepts every old rank's cursor when the
    world size changed between save and resume (see Trainer._my_cursor)
The loss and the accumulation are the Trainer's arguments, not stage hooks: `loss_fn(model, batch)`
defaults to mean cross-entropy over targets != -1, or the weight-normalised per-token NLL when the
batch carries weights (SFT masks, RL advantages); RL passes its own (stage.loss) and its own
`accum_steps` (micro-batches per step), where the others derive it from total_batch_tokens.
Everything else lives here: device placement, bf16 autocast, gradient accumulation, clipping,
the schedules, progress/ETA/MFU logging, metrics JSONL, evals, checkpoints and exact resume
(model, optimizers, data cursor, RNG, step), and a save on SIGTERM. How the model is spread over
ranks (compile, DDP or FSDP2, consolidated checkpoints) is train/parallel.py's business.

Evaluation is a layer above training: what a stage runs of it (the in-loop evals, RL's held-out
pass@k, the report card the tracker shows at the end) comes down as `Evals`, from the command that
starts the stage (picochat/cli/train.py), never imported from eval/ here.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from picochat.common.device import DistInfo, autocast_for, peak_flops, synchronize, uses_bf16
from picochat.common.errors import UserError
from picochat.common.io import atomic_write_json, atomic_write_text
from picochat.common.log import duration, human, is_main_process, print0
from picochat.common.tracking import open_tracker
from picochat.config import TrainConfig
from picochat.model import artifact
from picochat.model.fp8 import check_recipe, enable_fp8_training
from picochat.optim.groups import build_optimizers
from picochat.optim.schedule import lr_multiplier, muon_momentum
from picochat.train import checkpoint, parallel


@dataclass
class Batch:
    inputs: torch.Tensor                 # (B, T) int64
    targets: torch.Tensor                # (B, T) int64, -1 = no loss
    weights: torch.Tensor | None = None  # (B, T) float per-token loss weights (SFT mask, RL advantage)
    cursor: Any = None                   # data position *after* this batch (JSON-serialisable)

    def to(self, device: torch.device) -> Batch:
        """This batch with every tensor field on `device`, a subclass's extra fields included (RL
        carries the sampling and reference logprobs of each token to its loss this way).

        To a GPU the copy goes from page-locked (pinned) memory with non_blocking=True: the host
        does not wait for it and keeps queueing kernels. (A copy from ordinary pageable memory is
        staged and synchronous.)"""
        pin = device.type == "cuda"
        moved = {f.name: _pinned(getattr(self, f.name), pin).to(device, non_blocking=True) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)


def _pinned(t: torch.Tensor, pin: bool) -> torch.Tensor:
    return t.pin_memory() if pin and t.device.type == "cpu" else t


class Stage(Protocol):
    """What every stage has. The optional hooks are listed in the module docstring and StageHooks."""

    name: str

    def batches(self, cursor: Any) -> Iterator[Batch]: ...


class InLoop(Protocol):
    """Evals on a schedule of their own (eval/in_loop.py)."""

    def due(self, step: int, last: bool) -> bool: ...

    def run(self, model: torch.nn.Module, step: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Evals:
    """What a stage borrows from the evaluation layer above it, handed down by the command that
    starts the stage (picochat/cli/train.py pass eval's functions). A caller that passes
    none, as some tests do, trains without in-loop evals or a report card; RL needs `policy`."""

    # (resolved config, tokenizer, device, dist info) -> the stage's InLoop, or None when switched off
    in_loop: Callable[[Any, Any, torch.device, DistInfo], InLoop | None] | None = None
    # RL's held-out eval: (engine, task, GRPOConfig, *, seed, rank, world_size) -> pass@1, pass@k, ...
    policy: Callable[..., dict[str, Any]] | None = None
    # a run directory -> its report card's metrics table (markdown), for the tracker at the end
    report_card: Callable[[Path], str] | None = None


@dataclass(frozen=True)
class StageHooks:
    """A stage's optional hooks, each resolved to a value or None once, when fit() starts."""

    val_batches: Callable[[], Iterator[Batch]] | None = None
    evaluate: Callable[[torch.nn.Module], dict[str, Any]] | None = None
    metrics: Callable[[], dict[str, Any]] | None = None
    in_loop: InLoop | None = None
    reshards_cursors: bool = False

    @classmethod
    def of(cls, stage: Stage) -> StageHooks:
        return cls(**{f.name: getattr(stage, f.name, f.default) for f in fields(cls)})


def default_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    if batch.weights is None:
        return model(batch.inputs, batch.targets)
    nll = model(batch.inputs, batch.targets, reduction="none")               # (B, T)
    w = batch.weights * (batch.targets >= 0)                                  # (B, T), 0 on padding
    return (nll * w).sum() / w.abs().sum().clamp_min(1.0)                     # scalar: weighted mean


def train_step(model: torch.nn.Module, raw_model: torch.nn.Module, optimizers: list[torch.optim.Optimizer],
               micro_batches: Iterable[Batch], accum_steps: int, *,
               loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor] = default_loss,
               autocast: Any = contextlib.nullcontext(), grad_clip: float = 0.0,
               accumulating: Callable[..., Any] = lambda last: contextlib.nullcontext()) -> torch.Tensor:
    """One optimizer step, the only one in picochat (the trainer, `picochat cost`'s measurement and
    benchmarks/train_step.py run it): forward and backward over accum_steps micro-batches, each
    loss divided by accum_steps so the gradients sum to the step's mean; clip the global norm;
    step every optimizer; clear the gradients. `model` runs the forward (it may be compiled or
    wrapped by DDP/FSDP), `raw_model` owns the parameters; `accumulating(last=...)` lets DDP
    skip the gradient all-reduce until the last micro-batch. Returns the mean loss as a device
    tensor (no host sync here)."""
    total = None
    for micro, batch in enumerate(micro_batches):
        with accumulating(last=micro == accum_steps - 1):
            with autocast:
                loss = loss_fn(model, batch) / accum_steps
            loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    for opt in optimizers:
        opt.step()
    raw_model.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def evaluate_loss_bpb(model: torch.nn.Module, batches: Iterator[Batch], token_bytes: torch.Tensor,
                      max_tokens: int, autocast: Any) -> dict[str, float]:
    """Mean loss (nats/token) and bits per byte over up to max_tokens validation tokens.

    bpb = Σ nll / (ln 2 · Σ bytes(target)): tokens that decode to no bytes (specials) are left out,
    which makes the number comparable across tokenizers (the vocabulary cancels out)."""
    device = token_bytes.device
    nats = torch.zeros((), device=device, dtype=torch.float64)
    nbytes = torch.zeros((), device=device, dtype=torch.float64)
    ntok = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    for batch in batches:
        x, y = batch.inputs.to(device), batch.targets.to(device)
        with autocast:
            nll = model(x, y, reduction="none")                          # (B, T) nats per target
        valid = y >= 0                                                   # (B, T)
        b = torch.where(valid, token_bytes[y.clamp_min(0)], 0)           # (B, T) UTF-8 bytes per target
        counted = valid & (b > 0)                                        # (B, T): specials decode to 0 bytes
        nats += (nll * counted).sum().double()
        nbytes += b.sum().double()
        ntok += counted.sum().double()
        seen += y.numel()
        if seen >= max_tokens:
            break
    if dist.is_initialized():
        for t in (nats, nbytes, ntok):
            dist.all_reduce(t)
    return {"val_loss": (nats / ntok.clamp_min(1)).item(),
            "val_bpb": (nats / (math.log(2) * nbytes.clamp_min(1))).item()}


class Trainer:
    """Runs one stage: `Trainer(model, cfg, out_dir, ...).fit(stage)`."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, out_dir: Path, *, num_steps: int,
                 device: torch.device, dist_info: DistInfo = DistInfo(),
                 token_bytes: torch.Tensor | None = None, meta: dict | None = None,
                 loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor] = default_loss,
                 accum_steps: int | None = None, report_card: Callable[[Path], str] | None = None):
        self.raw_model, self.cfg, self.out_dir = model, cfg, Path(out_dir)
        self.num_steps, self.device, self.dist = num_steps, device, dist_info
        self.token_bytes = token_bytes.to(device) if token_bytes is not None else None
        self.meta, self.loss_fn, self.report_card = meta or {}, loss_fn, report_card
        self.autocast = autocast_for(device, cfg.dtype)
        check_recipe(cfg.fp8_recipe)  # a typo fails even without --fp8
        if cfg.fp8:  # swap the blocks' Linear layers before compile and DDP/FSDP see the model
            enable_fp8_training(model, cfg.fp8_recipe, device, uses_bf16(device, cfg.dtype), log=print0)
        # Compile and DDP/FSDP first: FSDP2 swaps the parameters for sharded ones, which the
        # optimizers must hold.
        self.par = parallel.parallelize(model, cfg, device, dist_info)
        self.model = self.par.model
        self.optimizers = build_optimizers(model, cfg)
        seq_len = model.config.sequence_len
        tokens_per_micro = cfg.device_batch_size * seq_len * dist_info.world_size
        if accum_steps is None and cfg.total_batch_tokens % tokens_per_micro:
            raise UserError(f"--total-batch-tokens {cfg.total_batch_tokens} is not a multiple of "
                            f"device_batch_size x seq_len x world_size = {tokens_per_micro}; pick a multiple")
        self.accum_steps = accum_steps or cfg.total_batch_tokens // tokens_per_micro
        self.tokens_per_step = tokens_per_micro * self.accum_steps
        self.step, self.cursor, self.elapsed = 0, None, 0.0
        self._stop_requested = False
        self.tracker = open_tracker(cfg.tracker if dist_info.is_main else "none", self.out_dir,
                                    {"train": asdict(cfg), "meta": self.meta})

    # ---- resume / save ----

    def _resume(self, stage: Stage) -> None:
        state = parallel.read_on_rank0(lambda: checkpoint.load_latest_checkpoint(self.out_dir), self.dist)
        metrics = self.out_dir / "metrics.jsonl"  # written by rank 0 only (_log_metrics)
        if state is None:
            if self.dist.is_main:
                metrics.unlink(missing_ok=True)
            return
        parallel.load_full_state(self.par, self.optimizers, state["model"], state["optimizers"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.cursor = self._my_cursor(state["cursors"], stage)
        checkpoint.set_rng_state(state["rng"])
        if self.dist.is_main and metrics.exists():  # drop metrics logged after the checkpoint: redone
            lines = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= self.step]
            atomic_write_text(metrics, "".join(ln + "\n" for ln in lines))
        print0(f"resumed {self.out_dir.name} from step {self.step}/{self.num_steps}")

    def _my_cursor(self, cursors: list, stage: Stage) -> Any:
        """Each rank reads its own shard, so each saved its own cursor. On a different world size
        the shards differ: a stage whose batches() can split every old rank's cursor between the
        new ranks (`reshards_cursors`, e.g. base: data/reshard.py) gets them all, as the gathered
        {"ranks": [...]}; any other restarts from rank 0's position, which skips or repeats a little."""
        if len(cursors) == self.dist.world_size:
            return cursors[self.dist.rank]
        if self.hooks.reshards_cursors:
            print0(f"checkpoint was written by {len(cursors)} ranks, resuming on {self.dist.world_size}: "
                   "the data cursors are re-sharded (no document repeated or skipped)")
            return {"ranks": cursors}
        print0(f"warning: checkpoint was written by {len(cursors)} ranks, resuming on {self.dist.world_size}; "
               "the data order restarts from rank 0's position (model and optimizer state are exact)")
        return cursors[0]

    def _save(self) -> None:
        cursors = [self.cursor]
        if self.dist.enabled:
            cursors = [None] * self.dist.world_size
            dist.all_gather_object(cursors, self.cursor)
        model_sd, optim_sd = parallel.full_state(self.par, self.optimizers)  # collective
        if self.dist.is_main:
            checkpoint.save_checkpoint(self.out_dir, self.step, {
                "model": model_sd, "cursors": cursors, "elapsed": self.elapsed, "optimizers": optim_sd})
        parallel.barrier()

    def _snapshot(self) -> None:
        """Weights only, kept for scoring the curve later (artifact.save_snapshot)."""
        model_sd = parallel.full_model_state(self.par)  # collective
        if self.dist.is_main:
            artifact.save_snapshot(self.out_dir, self.step, model_sd, self.raw_model.config.to_dict())
        parallel.barrier()

    def _log_metrics(self, record: dict) -> None:
        if self.dist.is_main:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            self.tracker.log(record)  # the same record, to TensorBoard / W&B (common/tracking.py)

    def _request_stop(self, signum, frame) -> None:
        if self._stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        print0("\nstop requested: finishing this step and saving a checkpoint (Ctrl-C again to abort)")
        self._stop_requested = True

    # ---- one optimizer step ----

    def _set_schedules(self) -> float:
        cfg = self.cfg
        mult = lr_multiplier(self.step / self.num_steps, cfg.warmup_frac, cfg.warmdown_frac, cfg.final_lr_frac)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * mult
                if "momentum" in group:
                    group["momentum"] = muon_momentum(self.step)
        return mult

    def _train_step(self, batches: Iterator[Batch]) -> torch.Tensor:
        """train_step over the next accum_steps micro-batches; the data cursor follows them."""
        def micro_batches() -> Iterator[Batch]:
            for _ in range(self.accum_steps):
                batch = next(batches).to(self.device)
                self.cursor = batch.cursor
                yield batch

        return train_step(self.model, self.raw_model, self.optimizers, micro_batches(), self.accum_steps,
                          loss_fn=self.loss_fn, autocast=self.autocast, grad_clip=self.cfg.grad_clip,
                          accumulating=self.par.accumulating)

    # ---- the loop ----

    def _evaluate(self, stage: Stage, regular: bool = True, in_loop: bool = False) -> dict[str, Any]:
        """regular: validation loss/bpb when the stage has val_batches, plus the stage's own evals
        (RL's pass@k, ...) when it defines `evaluate(model) -> dict`. in_loop: the evals the stage
        schedules itself (`stage.in_loop.run(model, step) -> dict`)."""
        result: dict[str, Any] = {}
        self.raw_model.eval()
        hooks = self.hooks
        if regular and self.token_bytes is not None and hooks.val_batches is not None:
            result.update(evaluate_loss_bpb(self.raw_model, hooks.val_batches(), self.token_bytes,
                                            self.cfg.eval_tokens, self.autocast))
        if regular and hooks.evaluate is not None:
            result.update(hooks.evaluate(self.raw_model))
        if in_loop:
            result.update(hooks.in_loop.run(self.raw_model, self.step))
        self.raw_model.train()
        return result

    def _progress_line(self, loss: float, mult: float, tok_s: float) -> str:
        pct = 100 * self.step / self.num_steps
        eta = (self.num_steps - self.step) * self.tokens_per_step / max(tok_s, 1e-9)
        line = (f"{self.out_dir.name} step {self.step}/{self.num_steps} ({pct:.0f}%) | loss {loss:.4f} | "
                f"lr x{mult:.2f} | {human(tok_s)} tok/s")
        peak = peak_flops(self.device)
        if peak:
            mfu = tok_s * self.raw_model.flops_per_token() / (peak * self.dist.world_size)
            line += f" | mfu {100 * mfu:.1f}%"
        if self.device.type == "cuda":
            line += f" | mem {torch.cuda.max_memory_allocated(self.device) / 2**30:.1f}GiB"
        return line + f" | elapsed {duration(self.elapsed)} | eta {duration(eta)}"

    def fit(self, stage: Stage) -> dict[str, Any]:
        """Train to num_steps (resuming if a checkpoint exists), then write the stage artifact."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.hooks = StageHooks.of(stage)
        self._resume(stage)
        old_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            final = self._loop(stage)
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        if final is None:
            print0(f"stopped at step {self.step}; checkpoint saved. Run the same command again to resume.")
            raise SystemExit(130)
        return final

    def _loop(self, stage: Stage) -> dict[str, Any] | None:
        batches = stage.batches(self.cursor)
        self.raw_model.train()
        # Training time only: evals are left out of both `elapsed` and the tok/s window, and the
        # steps run between the last progress line and an eval are counted before it starts.
        t_last, tokens_since, window_s, last_eval = time.perf_counter(), 0, 0.0, {}
        while self.step < self.num_steps:
            mult = self._set_schedules()
            loss = self._train_step(batches)
            self.step += 1
            tokens_since += self.tokens_per_step
            record: dict[str, Any] = {"step": self.step}
            is_last = self.step == self.num_steps
            if self.step % self.cfg.log_every == 0 or is_last:
                if self.dist.enabled:
                    dist.all_reduce(loss, op=dist.ReduceOp.AVG)
                window_s += self._clock_since(t_last)
                tok_s = tokens_since / window_s
                t_last, tokens_since, window_s = time.perf_counter(), 0, 0.0
                record.update(loss=loss.item(), lr_mult=mult, tok_s=tok_s, elapsed=self.elapsed)
                extra = self.hooks.metrics() if self.hooks.metrics is not None else {}  # e.g. RL's mean reward
                record.update(extra)
                print0(self._progress_line(record["loss"], mult, tok_s)
                       + "".join(f" | {k} {v:.3g}" for k, v in extra.items()))
            regular = bool(self.cfg.eval_every and self.step % self.cfg.eval_every == 0) or is_last
            in_loop = self.hooks.in_loop is not None and self.hooks.in_loop.due(self.step, is_last)
            if regular or in_loop:
                window_s += self._clock_since(t_last)
                last_eval = self._evaluate(stage, regular, in_loop)
                if last_eval:
                    record.update(last_eval, elapsed=self.elapsed)
                    print0(f"{self.out_dir.name} step {self.step}: " + " | ".join(  # numbers only (not samples)
                        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in last_eval.items() if isinstance(v, (int, float))))
                t_last = time.perf_counter()  # eval time is not training throughput
            if len(record) > 1:
                self._log_metrics(record)
            if is_last:
                break
            if self.cfg.snapshot_every and self.step % self.cfg.snapshot_every == 0:
                self._snapshot()
            stop = parallel.any_rank(self._stop_requested)  # every rank stops at the same step
            if (self.cfg.save_every and self.step % self.cfg.save_every == 0) or stop:
                self._save()
                if stop:
                    return None
        return self._finish(last_eval)

    def _clock_since(self, t_last: float) -> float:
        """Seconds of training since t_last (after the device catches up), added to `elapsed`."""
        synchronize(self.device)
        seconds = time.perf_counter() - t_last
        self.elapsed += seconds
        return seconds

    def _finish(self, last_eval: dict[str, float]) -> dict[str, Any]:
        final = {"step": self.step, "tokens": self.step * self.tokens_per_step, "elapsed": self.elapsed,
                 **last_eval}
        model_sd, optim_sd = parallel.full_state(self.par, self.optimizers)  # collective; optim: warm starts
        if self.dist.is_main:
            meta = {**self.meta, "model_config": self.raw_model.config.to_dict(),
                    "train_config": asdict(self.cfg), "final": final,
                    "num_params": self.raw_model.num_params(),
                    "flops_per_token": self.raw_model.flops_per_token(),
                    # where it ran, for the report's cost line (GPU-hours = elapsed x world_size)
                    "device": self.device.type, "world_size": self.dist.world_size,
                    "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"}
            artifact.save_artifact(self.out_dir, model_sd, meta, optimizer=optim_sd)
            for p in (self.out_dir / "checkpoints").glob("step_*"):
                p.unlink(missing_ok=True)  # the artifact supersedes the resume state
            run_dir = self.out_dir.parent
            self.tracker.finish(final, None if self.report_card is None else lambda: self.report_card(run_dir))
        parallel.barrier()
        print0(f"{self.out_dir.name} done: {self.step} steps, {human(final['tokens'])} tokens in "
               f"{duration(self.elapsed)}; saved to {self.out_dir}")
        return final


def write_config(out_dir: Path, config: dict) -> None:
    """The resolved config of the run, beside its artifact."""
    if is_main_process():
        atomic_write_json(Path(out_dir) / "config.json", config)
