"""A model for inference, loaded once: generate text, score pairs against the reference.

The narrow interface that evals, pair building and presets use, after lm-evaluation-harness's
``LM`` (``generate_until``, ``loglikelihood``):

- :meth:`InferenceModel.load`: a model folder or hub id, or an mmdpo run folder (its base
  model with the adapter of its latest checkpoint), optionally with a run's adapter on top;
- :meth:`InferenceModel.generate`: chat prompts in, responses out (batched, stop strings,
  greedy or sampled, ``num_samples`` per prompt);
- :meth:`InferenceModel.loglikelihood`: the summed response log-probs of preference pairs,
  with the adapter on (the policy) or off (the reference);
- :meth:`InferenceModel.reward_margins`: DPO's implicit reward margin of each pair,
  ``β[(ℓw − ℓw⁰) − (ℓl − ℓl⁰)]``, with the run's β and mean or summed log-probs;
- :func:`load_reward_model`, :func:`reward_scores`: a sequence-classification reward model
  and its score of each conversation (the ``reward_model`` scorer of ``datagen``).

Three functions stand between this interface and its implementations, one each:
:func:`generate_texts` (how text is generated), :func:`read_run` (which checkpoint, which
config, which calibration of a run folder) and :func:`margin_settings` (β and mean or sum).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mmdpo.types import UNSOURCED, Message, PreferenceSample

DEFAULT_MAX_LENGTH = 1024


class InferenceError(ValueError):
    """A model, adapter or run folder that cannot serve the request; the message says why."""


class PromptLike(Protocol):
    """What :meth:`InferenceModel.generate` reads of a prompt (``eval.base.Prompt`` is one;
    not to be confused with ``mmdpo.sampling.ChatPrompt``, the engine's own prompt record).

    ``messages``: chat messages; a message with images carries one ``{"type": "image"}`` part
    per entry of ``images`` (paths, bytes or PIL images), in order.
    """

    messages: list[Message]
    images: list[Any]


# ---------------------------------------------------------------------------- the three seams


def generate_texts(
    model: Any, processing: Any, prompts: Sequence[Any], *, seed: int | None = None, **settings: Any
) -> tuple[list[str], dict[str, Any]]:
    """THE generation implementation behind :meth:`InferenceModel.generate`: swap it here.

    Today: ``mmdpo.sampling.generate_texts`` (the batched sampling engine: one prefill per
    prompt for its ``num_samples`` samples, finished rows leave at once, a seeded random
    stream per sample; ``seed`` None means 0) for every model it ``supports`` (full-attention
    decoder caches); ``mmdpo.generation.generate`` (transformers' ``generate`` over
    left-padded batches, after ``transformers.set_seed(seed)`` when a seed is given) for the
    others (sliding-window or linear-attention caches). Both take ``is_vlm``,
    ``max_new_tokens``, ``stop``, ``num_samples``, ``batch_size``, ``greedy``,
    ``temperature``, ``top_p``, ``progress`` and ``desc`` and return ``(responses, stats)``:
    the responses flat and prompt by prompt, ``stats`` with ``n``, ``seconds``,
    ``samples_per_s``, ``new_tokens`` and ``tokens_per_s``. ``batch_size`` counts sequences
    decoded at once (a prompt's samples are as many rows); greedy token ids are the same in
    both, sampled responses come from the same distribution but not the same draws.
    """
    from mmdpo import sampling

    if sampling.supports(model):
        seed = 0 if seed is None else seed
        return sampling.generate_texts(model, processing, prompts, seed=seed, **settings)
    from mmdpo.generation import generate

    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    return generate(model, processing, prompts, **settings)


@dataclass
class RunInfo:
    """What inference needs of an mmdpo run (see :func:`read_run`).

    Attributes:
        checkpoint: the checkpoint folder whose adapter is used.
        config: the run's ``config.yaml`` as a dict ({} when the checkpoint has no run).
    """

    checkpoint: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str:
        return str(self.config.get("model", {}).get("name_or_path") or "")

    @property
    def max_length(self) -> int:
        return int(self.config.get("data", {}).get("max_length") or DEFAULT_MAX_LENGTH)

    @property
    def calibration_file(self) -> Path:
        from mmdpo.checkpoint import CALIBRATION_FILE

        return self.checkpoint / CALIBRATION_FILE


def is_run_folder(path: str | Path) -> bool:
    """An mmdpo run: a folder with ``config.yaml`` and a ``checkpoints/`` folder."""
    from mmdpo.run_folder import RunFolder

    return RunFolder(path).is_run()


def read_run(path: str | Path) -> RunInfo:
    """The reading of a run folder (its newest checkpoint that verifies, and its config), or
    of a checkpoint folder given as is (used only if it verifies, when it has a manifest).

    Raises:
        InferenceError: neither a run with a checkpoint that verifies nor a PEFT adapter
            folder; a damaged checkpoint named as is.
    """
    from mmdpo.checkpoint import MANIFEST, CheckpointError, verified_checkpoint
    from mmdpo.config import read_yaml
    from mmdpo.run_folder import CONFIG_FILE, RunFolder

    path = Path(path)
    if is_run_folder(path):
        checkpoint = RunFolder(path).latest_checkpoint()
        if checkpoint is None:
            raise InferenceError(
                f"run {path} has no complete checkpoint that verifies under {path}/checkpoints"
            )
        return RunInfo(checkpoint, read_yaml(path / CONFIG_FILE))
    if (path / "adapter_config.json").is_file():
        if (path / MANIFEST).is_file():  # an mmdpo checkpoint: used only if it verifies
            try:
                verified_checkpoint(path)
            except CheckpointError as err:
                raise InferenceError(str(err)) from None
        run = path.parent.parent  # <run>/checkpoints/step-N
        config = read_yaml(run / CONFIG_FILE) if (run / CONFIG_FILE).is_file() else {}
        return RunInfo(path, config)
    raise InferenceError(
        f"{path} is neither an mmdpo run folder (config.yaml + checkpoints/) nor a PEFT "
        "adapter folder (adapter_config.json)"
    )


def margin_settings(run_config: dict[str, Any]) -> tuple[float, bool, str]:
    """(β, mean log-probs?, loss name) from a run's resolved loss setting (the same
    resolution training and export use); the default loss otherwise."""
    from mmdpo.config import LossSettings
    from mmdpo.losses import resolve_loss

    loss = {**vars(LossSettings()), **run_config.get("loss", {})}
    setting = resolve_loss(loss["name"], loss.get("kwargs"), loss.get("length_normalized"))
    return float(setting.hyperparams.get("beta", 1.0)), setting.average, setting.name


# ---------------------------------------------------------------------------- the model


@dataclass
class InferenceModel:
    """A model ready for inference and what it was loaded from.

    Attributes:
        model, processing: the (possibly PEFT-wrapped) model and its tokenizer or processor.
        is_vlm: an image-text-to-text model with a processor.
        base: the base model's name or path.
        run: the run whose adapter is on, or None.
        dtype: dtype of the weights.
    """

    model: Any
    processing: Any
    is_vlm: bool
    base: str = ""
    run: RunInfo | None = None
    dtype: str = "float32"

    @property
    def adapter(self) -> str | None:
        """The checkpoint folder of the adapter, or None."""
        return str(self.run.checkpoint) if self.run is not None else None

    @property
    def run_config(self) -> dict[str, Any]:
        return self.run.config if self.run is not None else {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokenizer(self) -> Any:
        return self.processing.tokenizer if self.is_vlm else self.processing

    @classmethod
    def load(
        cls,
        model: str | Path,
        adapter: str | Path | None = None,
        *,
        dtype: str | None = None,
        model_settings: dict[str, Any] | None = None,
    ) -> InferenceModel:
        """Load a model folder or hub id, or an mmdpo run, plus an optional adapter on top.

        The base model is loaded with the run's model settings (kind, quantization, remote
        code), frozen; without a run, with ``model_settings`` (a config's ``model`` section,
        so that a base model is evaluated as a run of it trains). ``dtype`` defaults to the
        run's (bfloat16 on CUDA, float32 on CPU without a run).

        Raises:
            InferenceError: a run without a checkpoint or base model, two adapters.
        """
        from mmdpo.models.loading import load_policy

        run = None
        base = str(model)
        if is_run_folder(model):
            run = read_run(model)
            base = run.base_model
            if not base:
                raise InferenceError(f"{model}/config.yaml names no model.name_or_path")
        if adapter is not None:
            if run is not None:
                raise InferenceError(
                    "--model is already a run folder with an adapter; drop --adapter"
                )
            run = read_run(adapter)
        settings = (run.config.get("model") if run is not None else None) or model_settings or {}
        default_dtype = "bfloat16" if torch.cuda.is_available() else "float32"
        dtype = dtype or settings.get("dtype") or default_dtype
        quantization = settings.get("quantization", "none")
        loaded, processing, info = load_policy(
            base,
            kind=settings.get("kind", "auto"),
            quantization=quantization,
            quant_type=settings.get("quant_type", "nf4"),
            double_quant=settings.get("double_quant", True),
            dtype=dtype,
            trust_remote_code=bool(settings.get("trust_remote_code", False)),
            prepare_for_training=False,
        )
        if quantization == "none" and torch.cuda.is_available():
            loaded = loaded.to("cuda")
        if run is not None:
            from peft import PeftModel

            loaded = PeftModel.from_pretrained(loaded, str(run.checkpoint), is_trainable=False)
        loaded.eval()
        return cls(loaded, processing, info.is_vlm, base, run, str(dtype))

    # ------------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[PromptLike],
        *,
        max_new_tokens: int,
        stop: Sequence[str] = (),
        num_samples: int = 1,
        batch_size: int = 8,
        greedy: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        progress: bool = True,
        desc: str = "generating",
    ) -> tuple[list[str], dict[str, Any]]:
        """``num_samples`` responses to each prompt and throughput statistics, through
        :func:`generate_texts` (the batched sampling engine, or transformers' ``generate``
        for a model the engine does not support).

        Args:
            prompts: chat prompts; a VLM prompt's images go through the processor.
            max_new_tokens: cap on generated tokens per response.
            stop: strings that end a response; the response is cut before the first one.
            num_samples: responses per prompt (sampling; greedy copies are identical).
            batch_size: sequences decoded at once; a prompt's ``num_samples`` samples count
                as that many. Larger is faster until the KV cache (batch_size x (prompt +
                ``max_new_tokens``) tokens) fills the memory.
            greedy: greedy decoding; otherwise sampling with ``temperature`` and ``top_p``
                (and the top-k ``model.generate`` would apply: the generation config's, else 50).
            seed: the samples' seed: the same seed gives the same samples (None: 0 in the
                engine; transformers' global seed left alone on the fallback path).

        Returns:
            ``(responses, stats)``: responses flat, prompt by prompt (prompt ``i``'s at
            ``i * num_samples`` onwards); ``stats``: ``n``, ``seconds``, ``samples_per_s``,
            ``new_tokens``, ``tokens_per_s``.
        """
        return generate_texts(
            self.model, self.processing, prompts, is_vlm=self.is_vlm,
            max_new_tokens=max_new_tokens, stop=stop, num_samples=num_samples,
            batch_size=batch_size, greedy=greedy, temperature=temperature, top_p=top_p,
            seed=seed, progress=progress, desc=desc,
        )  # fmt: skip

    # ------------------------------------------------------------------------ scoring

    def calibrate(self, samples: list[PreferenceSample]) -> tuple[list[PreferenceSample], str]:
        """Scores on the run's calibrated scale (its checkpoint's calibration.json), as in
        training; groups the run never saw keep their raw scores. Returns the samples and
        what was applied."""
        from mmdpo.calibration import Calibration

        path = self.run.calibration_file if self.run is not None else None
        if path is None or not path.is_file():
            return samples, "none (no run calibration)"
        calibration = Calibration.load(path)
        if calibration.method == "none":
            return samples, "none"
        calibration.on_unknown = "raw"
        fitted = {key for key, stats in calibration.groups.items() if stats.n > 0}
        out, raw = [], 0
        for sample in samples:
            if (sample.modality, sample.source) not in fitted:
                only = [source for modality, source in fitted if modality == sample.modality]
                if sample.source == UNSOURCED and len(only) == 1:
                    # A pair that names no source is taken as the run's one group of its
                    # modality; with several groups it would be a guess, so it stays raw.
                    sample = dataclasses.replace(sample, source=only[0])
                else:
                    raw += 1
            out.append(calibration.apply(sample))
        what = f"{calibration.method} ({path})"
        if raw:
            what += f"; {raw} of {len(samples)} pairs kept raw scores (groups the run never fitted)"
        return out, what

    def _batches(
        self, samples: Sequence[PreferenceSample], batch_size: int, max_length: int | None
    ) -> Iterator[Any]:
        """The samples through the engine's transform and collator, batch by batch."""
        from mmdpo.data.collate import PreferenceCollator
        from mmdpo.data.transform import PairTransform, TransformSettings

        max_length = max_length or (self.run.max_length if self.run else DEFAULT_MAX_LENGTH)
        transform = PairTransform(
            self.processing, TransformSettings(max_length=max_length), is_vlm=self.is_vlm
        )
        collate = PreferenceCollator(self.tokenizer.pad_token_id)
        device = self.device
        for first in range(0, len(samples), batch_size):
            chunk = samples[first : first + batch_size]
            yield collate([transform(sample) for sample in chunk]).to(device)

    def _reference(self) -> Any:
        """The reference of inference: this model with its adapter off (as in training)."""
        from mmdpo.forward import unwrap
        from mmdpo.reference import ReferenceModel, image_sharing

        if not hasattr(unwrap(self.model), "disable_adapter"):
            raise InferenceError(
                "preference margins compare the model with its adapter on and off: give a run "
                "folder as --model, or --adapter RUN"
            )
        shares, _ = image_sharing(self.model)
        return ReferenceModel("adapter_off", policy=self.model, shares_images=shares)

    @torch.inference_mode()
    def loglikelihood(
        self,
        samples: Sequence[PreferenceSample],
        *,
        reference: bool = False,
        batch_size: int = 8,
        max_length: int | None = None,
    ) -> Any:
        """Summed response log-probs and token counts of each pair (a ``PairLogps``, shapes
        (N,)): the policy's, or with ``reference`` the model's with its adapter off."""
        from mmdpo.forward import PairLogps, concatenated_forward

        self.model.eval()
        ref = self._reference() if reference else None
        parts = [
            ref.logps(batch) if ref is not None else concatenated_forward(self.model, batch)
            for batch in self._batches(samples, batch_size, max_length)
        ]
        return PairLogps(*(torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])))

    @torch.inference_mode()
    def reward_margins(
        self,
        samples: Sequence[PreferenceSample],
        *,
        beta: float | None = None,
        average: bool | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        progress: bool = True,
    ) -> tuple[list[float], dict[str, Any]]:
        """The implicit reward margin of each pair, and timing statistics.

        ``margin = β[(ℓw − ℓw⁰) − (ℓl − ℓl⁰)]``: ℓ the policy's (adapter on) and ℓ⁰ the
        reference's (adapter off) response log-probs, per-token means when ``average`` else
        sums. ``beta`` and ``average`` default to the run's (:func:`margin_settings`).

        Raises:
            InferenceError: the model has no adapter to switch off (the margin would be 0).
        """
        from tqdm.auto import tqdm

        from mmdpo.forward import concatenated_forward

        run_beta, run_average, _ = margin_settings(self.run_config)
        beta = run_beta if beta is None else beta
        average = run_average if average is None else average
        reference = self._reference()
        self.model.eval()
        margins: list[float] = []
        start = time.perf_counter()
        bar = tqdm(total=len(samples), desc="preference margins", unit="pair", disable=not progress)
        for batch in self._batches(samples, batch_size, max_length):
            images = reference.policy_images(self.model, batch)  # once for both passes
            policy = concatenated_forward(self.model, batch, images=images)
            ref = reference.logps(batch, images)
            chosen = policy.chosen(average) - ref.chosen(average)
            rejected = policy.rejected(average) - ref.rejected(average)
            margins += (beta * (chosen - rejected)).float().tolist()
            bar.update(batch.num_pairs)
        bar.close()
        seconds = time.perf_counter() - start
        return margins, {
            "n": len(samples),
            "seconds": round(seconds, 3),
            "samples_per_s": round(len(samples) / seconds, 4) if seconds else float("nan"),
        }


# ---------------------------------------------------------------------------- reward models


def load_reward_model(
    name_or_path: str | Path, *, dtype: str | None = None, trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """A sequence-classification reward model (safetensors only) and its tokenizer, on CUDA
    when there is one; ``dtype`` defaults to bfloat16 on CUDA, float32 on CPU."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mmdpo.models.loading import require_safetensors
    from mmdpo.models.quantization import resolve_dtype

    name_or_path = str(name_or_path)
    require_safetensors(name_or_path)
    cuda = torch.cuda.is_available()
    torch_dtype = resolve_dtype(dtype or ("bfloat16" if cuda else "float32"))
    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path,
        dtype=torch_dtype,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return (model.to("cuda") if cuda else model), tokenizer


def reward_scores(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[Message]],
    *,
    batch_size: int = 8,
    max_length: int = 2048,
    progress: bool = True,
) -> list[float]:
    """A reward model's single logit for each conversation (text messages ending with the
    assistant's response).

    Rendered with the tokenizer's chat template (the engine's plain ``User: ... Assistant:``
    fallback when it has none), longest first, right-padded in batches (so the positions
    match an unpadded forward; the model reads its score at the last token before the
    padding, so ``model.config.pad_token_id`` must be set) and truncated from the left to
    ``max_length`` tokens, so that the response's end is kept.
    """
    from tqdm.auto import tqdm

    from mmdpo.data.transform import FALLBACK_CHAT_TEMPLATE

    has_template = getattr(tokenizer, "chat_template", None) is not None
    template = {} if has_template else {"chat_template": FALLBACK_CHAT_TEMPLATE}
    texts = [tokenizer.apply_chat_template(c, tokenize=False, **template) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # less padding
    scores = [float("nan")] * len(texts)
    device = next(model.parameters()).device
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    bar = tqdm(total=len(texts), desc="reward model", unit="response", disable=not progress)
    try:
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            inputs = tokenizer(
                [texts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=not has_template,  # a template writes its own BOS
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                logits = model(**inputs).logits[:, 0].float().tolist()
            for index, value in zip(batch, logits, strict=True):
                scores[index] = value
            bar.update(len(batch))
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
        bar.close()
    return scores
