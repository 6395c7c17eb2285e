"""The training loop: setup -> loop -> save, on accelerate, with no Trainer subclass.

``train(config, train_samples, eval_samples)`` is the engine's entry point; the application
(``tasks.run.train_run``, behind ``mmdpo train`` and ``mmdpo.train(config)``) loads and
validates the data with the adapters and calls it. One process on CPU or GPU, or several
under ``accelerate launch`` (DDP, DeepSpeed, FSDP). The run folder (``mmdpo.run_folder``) is
checked before anything loads, a resume starts from the newest checkpoint that verifies, and
Ctrl-C ends the run after a whole step with a checkpoint saved.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmdpo import checkpoint as ckpt
from mmdpo.calibration import Calibration, fit_calibration, format_groups
from mmdpo.config import Config, ConfigError
from mmdpo.data.collate import PreferenceCollator
from mmdpo.data.pipeline import (
    BatchOrder,
    TokenizeResult,
    drop_image_tensors,
    restore_images,
    tokenize_samples,
)
from mmdpo.data.transform import PairTransform, TransformSettings
from mmdpo.forward import unwrap
from mmdpo.layout_forward import PairForward, choose_forward
from mmdpo.losses import LossSetting
from mmdpo.metrics import (
    MetricsAccumulator,
    nonfinite_reason,
    peak_memory_bytes,
    spearman,
)
from mmdpo.metrics_log import MetricsWriter, ProgressBar, check_trackers, plot_metrics
from mmdpo.models.quantization import assert_4bit_trainable
from mmdpo.models.source import check_model_source
from mmdpo.objective import compute_objective
from mmdpo.reference import (
    ReferenceModel,
    adapter_disabled,
    build_reference,
    precompute_reference,
)
from mmdpo.report import write_report
from mmdpo.report.data_summary import write_data_summary
from mmdpo.report.samples import pick_samples, write_samples
from mmdpo.run_folder import RunFolder
from mmdpo.setup import (
    ModelFacts,
    build_optimizer,
    build_scheduler,
    check_run,
    load_model_for_training,
    load_processing,
    model_facts,
)
from mmdpo.sharding import sharding_for
from mmdpo.types import PreferenceSample, TokenizedPair


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what is left on disk."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the run after a whole step; the message says what was saved.

    Attributes:
        step: the optimizer steps done.
        checkpoint: the checkpoint saved on the way out (None when none could be).
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    final_checkpoint: Path | None
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0


def _tokenize_or_stop(
    samples: list[PreferenceSample],
    transform: PairTransform,
    config: Config,
    folder: RunFolder,
    name: str,
    is_main_process: bool = True,
) -> list[TokenizedPair]:
    """Every process tokenizes all samples; only the main one shows progress and writes."""
    result: TokenizeResult = tokenize_samples(
        samples,
        transform,
        progress=config.train.progress and is_main_process,
        desc=f"tokenizing {name}",
    )
    if result.problems:
        lines = [f"{p['id']}: {p['field']}: {p['error']}" for p in result.problems[:20]]
        more = len(result.problems) - len(lines)
        text = "\n".join(lines) + (f"\n... and {more} more" if more > 0 else "")
        if not config.data.skip_invalid:
            raise TrainingError(
                f"{len(result.problems)} {name} sample(s) cannot be tokenized:\n{text}\n"
                "(fix them, or set data.skip_invalid=true to drop them into invalid_rows.jsonl)"
            )
    if is_main_process:
        if folder.record_invalid(result.problems, stage="tokenize", split=name):
            print(
                f"skipped {len(result.problems)} {name} sample(s): see {folder.invalid_rows_file}"
            )
    return result.pairs


def _check_unique_ids(pairs: list[TokenizedPair]) -> None:
    """Ids key the reference cache and the records: two different pairs must not share one."""
    seen: set[str] = set()
    repeated = sorted({p.id for p in pairs if p.id in seen or seen.add(p.id)})
    if repeated:
        raise TrainingError(
            f"{len(repeated)} sample id(s) occur more than once across the training and "
            f"held-out data, e.g. {repeated[:5]}; give each data entry its own file name or "
            "ids (adapters number repeats within one file, not across files)"
        )


def _calibrate(
    config: Config, train_samples: list[PreferenceSample], resume_from: Path | None
) -> Calibration:
    saved = ckpt.load_checkpoint_calibration(resume_from) if resume_from else None
    if saved:
        return Calibration.from_dict(saved)
    low, high = config.data.calibration_range
    return fit_calibration(train_samples, config.data.calibration, target_range=(low, high))


def evaluate(
    model: Any,
    pairs: list[TokenizedPair],
    collate: PreferenceCollator,
    spec: Any,
    hyperparams: dict[str, Any],
    reference: ReferenceModel | None,
    *,
    average: bool,
    calibration: Calibration,
    batch_size: int,
    device: torch.device,
    forward: Any = None,
) -> dict[str, float]:
    """Preference accuracy, mean margin and loss on held-out pairs, per modality too.

    Under several processes each evaluates the whole held-out set (it is small); the numbers
    are therefore the same on every process.
    """
    model.eval()
    acc = MetricsAccumulator()
    score_margins: list[float] = []
    reward_margins: list[float] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = collate(pairs[start : start + batch_size]).to(device)
            obj = compute_objective(
                model,
                batch,
                spec,
                hyperparams,
                reference,
                average=average,
                calibration=calibration,
                **({"forward": forward} if forward is not None else {}),
            )
            out = obj.output
            acc.add(
                out.chosen_rewards,
                out.rejected_rewards,
                out.metrics,
                obj.policy.chosen(average),
                obj.policy.rejected(average),
                batch.modality,
                losses=out.losses.detach(),
            )
            score_margins += (batch.score_chosen - batch.score_rejected).tolist()
            reward_margins += (out.chosen_rewards - out.rejected_rewards).tolist()
    model.train()
    result = {f"eval/{k}": v for k, v in acc.compute().items()}
    result["eval/spearman_score_reward"] = spearman(score_margins, reward_margins)
    return result


@contextlib.contextmanager
def _reported(name: str):
    """Turn a failure into one printed line (a finished run stays finished)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - any failure of an optional extra
        if os.environ.get("MMDPO_DEBUG"):
            raise
        print(f"{name}: not written ({type(err).__name__}: {err}); MMDPO_DEBUG=1 shows why")


def _all_finite(model: Any) -> bool:
    for param in model.parameters():
        if param.grad is not None and not torch.isfinite(param.grad).all():
            return False
    return True


def train(
    config: Config,
    train_samples: list[PreferenceSample],
    eval_samples: list[PreferenceSample] | None = None,
    *,
    resume: bool = False,
) -> RunResult:
    """Train ``config``'s model on the samples; write the run folder; return the outcome.

    Refuses (before any model loads) a run folder that already holds a run unless
    ``resume``; with ``resume`` it continues from the newest checkpoint that verifies. Ctrl-C
    finishes the current step, saves a checkpoint and raises ``TrainingInterrupted``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    folder = RunFolder(config.train.output_dir)
    folder.prepare(resume=resume)
    loss = config.loss.resolve()
    check_trackers(config.train.trackers)
    check_model_source(config.model.name_or_path, "model.name_or_path")
    facts = model_facts(config)  # the model's config, read once for the whole run
    check_run(config, loss.spec, train_samples + list(eval_samples or []), facts)
    # sampling earlier in this process (a preset's pairs stage) kept its cache's buffers and
    # packed weights for the next sampling run; training has better use for that memory
    from mmdpo.sampling import drop_spare_buffers

    drop_spare_buffers()

    # One process may train several runs (demo --compare, tests) with different precisions;
    # the process-group state (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        gradient_accumulation_steps=1,
        mixed_precision=config.train.mixed_precision,
        cpu=not torch.cuda.is_available(),
    )
    main = accelerator.is_main_process
    if not main:
        # transformers' own bars (loading weights) would otherwise show once per process.
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    resume_from = _checkpoint_to_resume(folder, main) if resume else None
    if main:
        folder.save_config(config)
    set_seed(config.train.seed)

    data = _prepare_data(
        config, accelerator, folder, resume_from, train_samples, eval_samples, facts
    )
    loop = _Loop(config, accelerator, data, loss, folder)
    if resume_from is not None:
        loop.resume(resume_from)
    return loop.run()


def _checkpoint_to_resume(folder: RunFolder, main: bool) -> Path:
    """The newest checkpoint that verifies; damaged newer ones are named (main process)."""
    checkpoint = folder.latest_checkpoint(report=None if main else (lambda _: None))
    if checkpoint is None:
        raise TrainingError(
            f"--resume: no complete checkpoint that verifies under {folder.checkpoints_dir}; "
            "start anew in another train.output_dir (or remove this one)"
        )
    return checkpoint


@dataclass
class _Stats:
    """What the loop carries from step to step."""

    train: dict[str, float] = field(default_factory=dict)
    eval: dict[str, float] = field(default_factory=dict)
    bad_in_a_row: int = 0


class _SigintFlag:
    """While active, the first Ctrl-C only sets ``raised`` (the loop then finishes its step,
    saves and stops); a second one interrupts at once, as Ctrl-C normally does."""

    def __init__(self, announce: bool) -> None:
        self.raised = False
        self._announce = announce
        self._previous: Any = None

    def __enter__(self) -> _SigintFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
        if self._announce:
            print(
                "\ninterrupt: finishing this step, then saving a checkpoint "
                "(Ctrl-C again to stop at once, without saving)",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class _Data:
    calibration: Calibration
    train_pairs: list[TokenizedPair]
    eval_pairs: list[TokenizedPair]
    collate: PreferenceCollator
    transform: PairTransform
    report_samples: list[PreferenceSample]
    """A few raw samples whose prompts are answered at the end (``samples.jsonl``)."""
    report_split: str
    facts: ModelFacts
    processing: Any


def _prepare_data(
    config: Config,
    accelerator: Any,
    folder: RunFolder | Path,
    resume_from: Path | None,
    train_samples: list[PreferenceSample],
    eval_samples: list[PreferenceSample] | None,
    facts: ModelFacts | None = None,
) -> _Data:
    """Calibrated scores (fitted, or the checkpoint's on resume), tokenized pairs, collator."""
    folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    main = accelerator.is_main_process
    raw_train, raw_eval = train_samples, list(eval_samples or [])
    calibration = _calibrate(config, train_samples, resume_from)
    train_samples = calibration.apply_all(train_samples)
    eval_samples = calibration.apply_all(eval_samples or [])
    if main:
        calibration.save(folder.calibration_file)
        print(format_groups(calibration))  # what was pooled into one score scale, and how

    facts = facts or model_facts(config)
    processing, is_vlm = load_processing(config, facts)
    if is_vlm and accelerator.distributed_type == "FSDP":  # accelerate's DistributedType.FSDP
        raise ConfigError(
            "image-text models do not run under FSDP yet: the engine encodes each pair's images "
            "once, outside the wrapped forward, where FSDP's weights are sharded; use DDP or "
            "DeepSpeed ZeRO-3 (mmdpo/configs/accelerate/ddp.yaml, deepspeed_zero3.yaml)"
        )
    settings = TransformSettings(config.data.max_length, config.data.max_prompt_length)
    transform = PairTransform(processing, settings, is_vlm=is_vlm)
    train_pairs = _tokenize_or_stop(train_samples, transform, config, folder, "train", main)
    eval_pairs = _tokenize_or_stop(eval_samples, transform, config, folder, "eval", main)
    if config.data.limit is not None:
        train_pairs = train_pairs[: config.data.limit]
    _check_unique_ids(train_pairs + eval_pairs)
    # Pixel tensors are re-created batch by batch, not held for the whole dataset.
    drop_image_tensors(train_pairs + eval_pairs)
    pad_id = transform.tokenizer.pad_token_id
    collate = PreferenceCollator(
        pad_id if pad_id is not None else transform.eos_token_id,
        restore=functools.partial(restore_images, transform=transform),
    )
    if main:
        write_data_summary(
            folder.data_summary_file,
            {"train": (raw_train, train_pairs), "eval": (raw_eval, eval_pairs)},
            calibration=calibration.to_dict(),
        )
    shown = raw_eval if eval_pairs else raw_train
    shown_ids = {p.id for p in (eval_pairs or train_pairs)}
    report_samples = pick_samples(shown, shown_ids, config.train.samples)
    split = "eval" if eval_pairs else "train"
    return _Data(
        calibration,
        train_pairs,
        eval_pairs,
        collate,
        transform,
        report_samples,
        split,
        facts,
        processing,
    )


# Process layouts where ``auto`` may pick a denser forward: one process or DDP. Under FSDP and
# DeepSpeed the layouts are not verified yet (an explicit setting is still honoured).
_LAYOUT_VERIFIED_UNDER = ("NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU")


def _choose_forward(config: Config, model: Any, accelerator: Any) -> PairForward:
    """The run's forward layout (``train.forward_layout``), printed once with any fallback."""
    setting = config.train.forward_layout
    distributed = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    if setting == "auto" and distributed not in _LAYOUT_VERIFIED_UNDER:
        forward, reason = PairForward("two_row"), f"not yet verified under {distributed}"
    else:
        try:
            forward, reason = choose_forward(setting, model, config.train.layout_row_tokens)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if accelerator.is_main_process:
        because = f"; auto fell back: {reason}" if setting == "auto" and reason else ""
        print(f"forward layout: {forward.describe()}{because}", flush=True)
    return forward


class _Loop:
    """One run after its data is ready: model, reference, optimizer, the steps, checkpoints."""

    def __init__(
        self,
        config: Config,
        accelerator: Any,
        data: _Data,
        loss: LossSetting,
        folder: RunFolder,
    ):
        self.config, self.accelerator, self.data, self.folder = config, accelerator, data, folder
        self.loss = loss
        model = load_model_for_training(config, data.facts, data.processing)
        self.forward = _choose_forward(config, model, accelerator)
        pairs = data.train_pairs + data.eval_pairs
        # Before accelerate wraps the model (one process runs the pass, see mmdpo.reference).
        precomputed = precompute_reference(
            config, loss.spec, model, pairs, data.collate, folder.path, accelerator, self.forward
        )
        assert_4bit_trainable(model)  # the precompute pass ran it in eval mode without grad
        self.order = BatchOrder(
            num_pairs=len(data.train_pairs),
            batch_size=config.train.batch_size,
            grad_accum=config.train.grad_accum,
            num_processes=accelerator.num_processes,
            process_index=accelerator.process_index,
            seed=config.train.seed,
            shuffle=config.data.shuffle,
        )
        steps = config.train.max_steps or math.ceil(
            config.train.epochs * self.order.steps_per_epoch
        )
        self.total_steps = max(1, steps)
        optimizer = build_optimizer(config, model)
        self.scheduler = build_scheduler(config, optimizer, self.total_steps)
        if accelerator.state.deepspeed_plugin is not None:
            # accelerate reads DeepSpeed's micro-batch size off a dataloader; mmdpo batches itself.
            ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
            ds_config["train_micro_batch_size_per_gpu"] = config.train.batch_size
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.reference = build_reference(
            config, loss.spec, self.model, accelerator, precomputed, forward=self.forward
        )
        if accelerator.is_main_process and self.reference and self.reference.sharing_note:
            print(f"adapter-off reference reuses the policy's image work: "
                  f"{self.reference.sharing_note}", flush=True)  # fmt: skip
        # FSDP / DeepSpeed ZeRO: weights gathered by every process, optimizer state per process.
        self.sharding = sharding_for(accelerator, self.model)
        self.start_step = self.skipped = 0
        self.resumed = False
        self.last_checkpoint: Path | None = None

    def resume(self, checkpoint: Path) -> None:
        state = ckpt.load_checkpoint(
            checkpoint,
            model=unwrap(self.model),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            process_index=self.accelerator.process_index,
            verify=False,  # latest_checkpoint has just verified every file
            sharding=self.sharding,
        )
        self.start_step = int(state["step"])
        self.resumed = True
        self.last_checkpoint = checkpoint
        if self.accelerator.is_main_process:
            print(
                f"resuming from {checkpoint} (step {self.start_step} of {self.total_steps})",
                flush=True,
            )

    def save(self, step: int) -> Path:
        self.last_checkpoint = ckpt.save_checkpoint(
            self.folder.path,
            step,
            model=unwrap(self.model),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            train_state={"step": step, "skipped_steps": self.skipped},
            config=self.config.to_dict(),
            calibration=self.data.calibration.to_dict(),
            keep_last=self.config.train.keep_last,
            is_main_process=self.accelerator.is_main_process,
            process_index=self.accelerator.process_index,
            barrier=self.accelerator.wait_for_everyone,
            sharding=self.sharding,
        )
        return self.last_checkpoint

    def evaluate(self) -> dict[str, float]:
        stats = evaluate(
            self.model,
            self.data.eval_pairs,
            self.data.collate,
            self.loss.spec,
            self.loss.hyperparams,
            self.reference,
            average=self.loss.average,
            calibration=self.data.calibration,
            batch_size=self.config.train.batch_size,
            device=self.accelerator.device,
            forward=self.forward,
        )
        assert_4bit_trainable(self.model)
        return stats

    def forward_backward(self, epoch: int, step_in_epoch: int) -> tuple[dict[str, float], int]:
        """Every micro-batch of one step through the objective and backward (gradients are
        synchronised on the last); returns the step's metrics and its token count."""
        from accelerate.utils import gather_object

        accelerator, model = self.accelerator, self.model
        accumulator = MetricsAccumulator()
        tokens = 0
        micro_batches = self.order.step_batches(epoch, step_in_epoch)
        for micro_index, indices in enumerate(micro_batches):
            batch = self.data.collate([self.data.train_pairs[i] for i in indices])
            batch = batch.to(accelerator.device)
            tokens += int(batch.attention_mask.sum())
            sync = micro_index == len(micro_batches) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                with accelerator.autocast():
                    obj = compute_objective(
                        model,
                        batch,
                        self.loss.spec,
                        self.loss.hyperparams,
                        self.reference,
                        average=self.loss.average,
                        calibration=self.data.calibration,
                        forward=self.forward,
                    )
                accelerator.backward(obj.loss / len(micro_batches))
            accumulator.add(
                obj.output.chosen_rewards,
                obj.output.rejected_rewards,
                obj.output.metrics,
                obj.policy.chosen(self.loss.average).detach(),
                obj.policy.rejected(self.loss.average).detach(),
                batch.modality,
                losses=obj.output.losses.detach(),
            )
        gather = gather_object if accelerator.num_processes > 1 else None
        return accumulator.compute(gather), tokens

    def update(self, loss: float) -> tuple[float | None, str | None]:
        """Clip and take the optimizer step unless the loss or a gradient is not finite;
        returns the gradient norm and the reason the step was skipped (None: taken)."""
        max_norm = self.config.train.max_grad_norm
        grad_norm = None
        if max_norm > 0:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        elif not _all_finite(self.model):
            grad_norm = math.inf
        reason = nonfinite_reason(loss, grad_norm)
        if reason is None:
            self.optimizer.step()
        else:
            self.skipped += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm, reason

    def run(self) -> RunResult:
        config, accelerator, total_steps = self.config, self.accelerator, self.total_steps
        main = accelerator.is_main_process
        writer = MetricsWriter(
            self.folder.path,
            trackers=tuple(config.train.trackers),
            resume_step=self.start_step if self.resumed else None,
            is_main_process=main,
            config=config.to_dict(),
        )
        bar = ProgressBar(
            total_steps,
            initial=self.start_step,
            disable=not (config.train.progress and main),
        )
        stats = _Stats()
        self.model.train()
        with writer, bar, _SigintFlag(announce=main) as interrupt:
            for step, epoch, step_in_epoch in self.order.steps(self.start_step, total_steps):
                done = self._step(step, epoch, step_in_epoch, writer, bar, stats)
                if done < total_steps and self._stop_requested(interrupt):
                    raise self._interrupted(done)
            if self.data.eval_pairs and not (
                config.train.eval_every and total_steps % config.train.eval_every == 0
            ):
                stats.eval = self.evaluate()
                writer.log(stats.eval, total_steps)
            self.save(total_steps)
        if main and config.train.plots:
            with _reported("plots"):
                plot_metrics(self.folder.metrics_file, self.folder.plots_dir)
        if main:
            self.write_samples_and_report(total_steps)
        accelerator.wait_for_everyone()
        return RunResult(
            self.folder.path,
            total_steps,
            self.last_checkpoint,
            stats.train,
            stats.eval,
            self.skipped,
        )

    def _step(
        self,
        step: int,
        epoch: int,
        step_in_epoch: int,
        writer: MetricsWriter,
        bar: ProgressBar,
        stats: _Stats,
    ) -> int:
        """One optimizer step with its logging, evaluation and checkpoint; returns steps done."""
        config = self.config
        started = time.perf_counter()
        stats.train, tokens = self.forward_backward(epoch, step_in_epoch)
        grad_norm, reason = self.update(stats.train.get("loss", math.nan))
        stats.bad_in_a_row = 0 if reason is None else stats.bad_in_a_row + 1
        elapsed = max(time.perf_counter() - started, 1e-9)
        done = step + 1
        stats.train.update(
            {
                "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": math.nan if grad_norm is None else float(grad_norm),
                "epoch": epoch + (step_in_epoch + 1) / self.order.steps_per_epoch,
                "perf/tokens_per_s": tokens * self.accelerator.num_processes / elapsed,
                "perf/pairs_per_s": self.order.pairs_per_step / elapsed,
                "memory/peak_bytes": float(peak_memory_bytes()),
            }
        )
        if reason is not None:
            writer.log_skipped(done, reason, **stats.train)
            bar.write(f"step {done}: skipped ({reason})")
        elif done % config.train.log_every == 0 or done == self.total_steps:
            writer.log(stats.train, done)
        bar.update(stats.train)
        if reason is not None and stats.bad_in_a_row >= config.train.max_bad_steps:
            raise self._too_many_bad_steps(done, stats.bad_in_a_row, reason)
        eval_every = config.train.eval_every
        if self.data.eval_pairs and eval_every and done % eval_every == 0:
            stats.eval = self.evaluate()
            writer.log(stats.eval, done)
        if config.train.save_every and done % config.train.save_every == 0:
            if done < self.total_steps:
                self.save(done)
        return done

    def _stop_requested(self, interrupt: _SigintFlag) -> bool:
        """Whether any process got Ctrl-C; all processes agree, so all stop at this step."""
        if self.accelerator.num_processes == 1:
            return interrupt.raised
        flag = torch.tensor([float(interrupt.raised)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _interrupted(self, done: int) -> TrainingInterrupted:
        """Save the step just finished (a checkpoint costs what a save_every save costs)."""
        saved = self.last_checkpoint
        if saved is None or ckpt.checkpoint_step(saved) != done:
            saved = self.save(done)
        return TrainingInterrupted(
            f"interrupted after step {done} of {self.total_steps}; saved {saved}", done, saved
        )

    def write_samples_and_report(self, step: int) -> None:
        """``samples.jsonl`` (the trained and the base model's answers), then ``report.html``.

        The run is complete by now (its checkpoint is saved), so a failure here is reported
        in one line and does not fail the run (``MMDPO_DEBUG=1`` raises it).
        """
        samples, config = self.data.report_samples, self.config
        if samples and self.sharding is not None:
            print(f"samples.jsonl: skipped (the weights are sharded: {self.sharding.kind})")
        elif samples:
            with _reported("samples.jsonl"), self.accelerator.autocast():
                write_samples(
                    self.folder.samples_file,
                    unwrap(self.model),
                    self.data.transform,
                    samples,
                    split=self.data.report_split,
                    step=step,
                    with_base=config.lora.enabled,
                    base_context=adapter_disabled,
                )
        if config.train.report:
            with _reported(self.folder.report_file.name):
                write_report([self.folder.path], self.folder.report_file)

    def _too_many_bad_steps(self, done: int, count: int, reason: str) -> TrainingError:
        where = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else "no checkpoint was written yet"
        )
        return TrainingError(
            f"step {done}: {count} steps in a row had a non-finite loss or gradient "
            f"({reason}); stopping ({where}). Lower train.learning_rate or check the data."
        )
