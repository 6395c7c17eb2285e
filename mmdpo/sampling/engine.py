"""Batched sampling: many prompts, ``n`` samples each, through one decode loop.

The loop keeps up to ``batch_size`` rows decoding. A prompt is prefilled once (left-padded
with the other prompts admitted at the same time, its images encoded there), and its ``n``
samples attend to one copy of that prefill's keys and values (``SharedPromptCache``; with
``n`` = 1 or ``share_prompt=False`` each row has its own, ``SlotCache``). A row that ends
(EOS, a stop string, the token cap) leaves at once; its slot goes to the next waiting prompt,
and when none waits the dead slot is dropped, so no step computes a finished row.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from mmdpo.generation import encode_batch, eos_token_ids, throughput, tokenizer_of
from mmdpo.sampling.cache import SlotCache, unsupported_layers
from mmdpo.sampling.choose import choose_tokens, sample_generator
from mmdpo.sampling.inputs import (
    ChatPrompt,
    ModelCall,
    as_prompt,
    base_model,
    decode_positions,
    forward,
    group_key,
    ignored_generation_settings,
    render,
)
from mmdpo.sampling.packed import MIN_ROWS, PackedLinears
from mmdpo.sampling.prefill import prefill
from mmdpo.sampling.shared import SharedPromptCache, attending, decoder_configs
from mmdpo.sampling.stops import FinishCheck


@dataclass(frozen=True)
class SamplingSettings:
    """How to generate (checked on creation).

    Attributes:
        max_new_tokens: cap on generated tokens per sample (EOS included).
        n: samples per prompt; they share the prompt's prefill.
        greedy: argmax decoding; otherwise sampling with ``temperature``, ``top_k``, ``top_p``.
        temperature, top_k, top_p: transformers' warpers, in this order; ``top_k`` None and
            ``top_p`` 1.0 are off. (``model.generate`` samples with ``top_k=50`` unless the
            model's generation config says otherwise; pass it to sample the same way.)
        seed: sample j of prompt i draws from its own generator seeded by (seed, i, j).
        stop: strings that end a sample; its text is cut before the first one.
        batch_size: rows decoded at once (all ``n`` samples of a prompt join together, so a
            batch holds ``max(batch_size, n)`` rows at most).
        share_prompt: with ``n`` above 1, the samples of a prompt attend to one copy of its
            keys and values (``mmdpo.sampling.shared``) instead of one copy each.
        pack_weights: on CPU, when a batch can hold ``packed.MIN_ROWS`` rows, the decode
            steps multiply by float32 linear weights packed once for MKL
            (``mmdpo.sampling.packed``: a copy of those weights, kept for the next run until
            ``drop_spare_buffers``).
    """

    max_new_tokens: int
    n: int = 1
    greedy: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    batch_size: int = 32
    share_prompt: bool = True
    pack_weights: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        for name in ("max_new_tokens", "n", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature must be above 0 for sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1 (or None: off), got {self.top_k}")


@dataclass
class Completion:
    """One sample.

    Attributes:
        text: decoded without special tokens, cut before the first stop string, stripped.
        token_ids: the generated ids, up to and including the EOS or the token that completed
            a stop string.
        finish_reason: ``"eos"``, ``"stop"`` or ``"length"`` (``max_new_tokens`` reached).
    """

    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class SamplingStats:
    """What the run computed and how fast.

    Attributes:
        prompts, samples: prompts given; samples made (prompts x n).
        seconds: wall time of the whole call.
        new_tokens: generated tokens (EOS included); prompt_tokens: real prompt tokens
            prefilled (each prompt once; image tokens included for VLMs).
        prefill_forwards, prefill_rows: prefill forward calls and the prompt rows in them
            (a prefix shared by a prefill's prompts is one more call, of one row).
        shared_prefix_tokens: prompt tokens computed once for all prompts of a prefill
            (a common system prompt), summed over prefills.
        decode_steps, decode_rows: decode forward calls and the rows they computed.
        live_rows: rows computed for a sample still going (decode_rows minus dead slots).
        prefill_seconds: wall time of the prefills (encoding and images included).
        packed_linears: linear layers given packed weights for the decode steps (used in
            steps of ``packed.MIN_ROWS`` rows or more; 0: none).
    """

    prompts: int = 0
    samples: int = 0
    seconds: float = 0.0
    new_tokens: int = 0
    prompt_tokens: int = 0
    prefill_forwards: int = 0
    prefill_rows: int = 0
    shared_prefix_tokens: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    live_rows: int = 0
    prefill_seconds: float = 0.0
    packed_linears: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """The fields plus today's generation stats (``mmdpo.generation.throughput``: ``n``,
        ``seconds``, ``samples_per_s``, ``new_tokens``, ``tokens_per_s``)."""
        return {
            **asdict(self),
            **throughput(self.samples, self.seconds, self.new_tokens),
            "prefill_seconds": round(self.prefill_seconds, 3),
        }


@dataclass
class SamplingResult:
    """``completions[i][j]``: sample j of prompt i; ``stats``: the run's counts and speed."""

    completions: list[list[Completion]]
    stats: SamplingStats = field(default_factory=SamplingStats)

    def texts(self) -> list[list[str]]:
        return [[c.text for c in samples] for samples in self.completions]


@torch.inference_mode()
def sample(
    model: Any,
    processing: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int,
    n: int = 1,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    seed: int = 0,
    stop: Sequence[str] = (),
    batch_size: int = 32,
    share_prompt: bool = True,
    pack_weights: bool = True,
    is_vlm: bool = False,
    eos_ids: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "sampling",
) -> SamplingResult:
    """``n`` responses to each prompt, with their token ids, and the run's statistics.

    Args:
        model: a causal LM or image-text-to-text model (PEFT-wrapped or not); put in eval mode.
        processing: its tokenizer (text) or processor (VLM).
        prompts: each a ``ChatPrompt``, a rendered string, a list of chat messages, or an
            object with ``messages`` and ``images`` (``eval.base.Prompt``).
        eos_ids: ids that end a sample (default: the tokenizer's and generation config's EOS).
        Others: see ``SamplingSettings``.

    Returns:
        ``SamplingResult``: ``completions[i][j]`` for prompt i, sample j (prompt order kept).
    """
    settings = SamplingSettings(
        max_new_tokens, n, greedy, temperature, top_k, top_p, seed, tuple(stop), batch_size,
        share_prompt, pack_weights,
    )  # fmt: skip
    model.eval()
    ignored = ignored_generation_settings(model)
    if ignored:
        warnings.warn(
            f"mmdpo.sampling ignores these settings of the model's generation config, which "
            f"model.generate would apply: {ignored}",
            stacklevel=2,
        )
    sampler = _Sampler(model, processing, [as_prompt(p) for p in prompts], settings, is_vlm)
    if eos_ids is not None:
        sampler.check.eos_ids = frozenset(eos_ids)
    return sampler.run(progress, desc)


def supports(model: Any) -> bool:
    """Whether ``sample`` can run this model (a full-attention decoder cache)."""
    return not unsupported_layers(_base_config(model))


GENERATE_DEFAULT_TOP_K = 50  # transformers' GenerationConfig default when a model sets none


def generate_top_k(model: Any) -> int | None:
    """The top-k that ``model.generate(do_sample=True)`` applies: the model's generation
    config's, else transformers' default 50; None when it is 0 (off)."""
    value = getattr(getattr(model, "generation_config", None), "top_k", None)
    value = GENERATE_DEFAULT_TOP_K if value is None else int(value)
    return value or None


def generate_texts(
    model: Any,
    processing: Any,
    prompts: Sequence[Any],
    *,
    is_vlm: bool,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    num_samples: int = 1,
    batch_size: int = 8,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None | str = "generate",
    seed: int = 0,
    progress: bool = True,
    desc: str = "generating",
) -> tuple[list[str], dict[str, Any]]:
    """``sample`` in the shape of today's generation (``mmdpo.generation.generate``,
    ``mmdpo.inference.generate_texts``): responses flat, prompt ``i``'s at
    ``i * num_samples`` onwards, and stats with ``n``, ``seconds``, ``samples_per_s``,
    ``new_tokens``, ``tokens_per_s`` (plus the engine's counts). ``top_k="generate"``
    samples with the top-k ``model.generate`` would use (``generate_top_k``)."""
    if top_k == "generate":
        top_k = None if greedy else generate_top_k(model)
    result = sample(
        model, processing, prompts, n=num_samples, max_new_tokens=max_new_tokens,
        greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        stop=stop, batch_size=batch_size, is_vlm=is_vlm, progress=progress, desc=desc,
    )  # fmt: skip
    return [text for texts in result.texts() for text in texts], result.stats.as_dict()


@dataclass
class _Row:
    """A sample being generated."""

    prompt: int
    index: int
    tokens: list[int]
    generator: torch.Generator | None


@dataclass
class _Batch:
    """The rows decoding together: their cache slots (None: a dead slot), the position of
    each slot's next token and the token it feeds next."""

    cache: SlotCache
    rows: list[_Row | None]
    next_positions: torch.Tensor
    last_tokens: torch.Tensor

    def live(self) -> list[int]:
        return [slot for slot, row in enumerate(self.rows) if row is not None]

    def dead(self) -> list[int]:
        return [slot for slot, row in enumerate(self.rows) if row is None]


class _Sampler:
    def __init__(
        self,
        model: Any,
        processing: Any,
        prompts: list[ChatPrompt],
        settings: SamplingSettings,
        is_vlm: bool,
    ) -> None:
        unsupported = unsupported_layers(_base_config(model))
        if unsupported:
            raise NotImplementedError(
                f"mmdpo.sampling holds full-attention caches only; this model's cache has "
                f"{', '.join(unsupported)} (use transformers' generate for it)"
            )
        self.model, self.processing, self.prompts = model, processing, prompts
        self.settings, self.is_vlm = settings, is_vlm
        self.call = ModelCall.of(model)
        # one prompt copy for its samples where the decoder's attention layers can be routed
        wanted = settings.share_prompt and settings.n > 1
        self.decoder_configs = decoder_configs(base_model(model)) if wanted else []
        self.shared = bool(self.decoder_configs)
        self.device = next(model.parameters()).device
        tokenizer = tokenizer_of(processing, is_vlm)
        self.check = FinishCheck(
            tokenizer, eos_token_ids(model, tokenizer), settings.stop, settings.max_new_tokens
        )
        self.texts = [render(processing, prompt, is_vlm=is_vlm) for prompt in prompts]
        # Longest first (less padding per prefill), image prompts apart from text-only ones.
        order = sorted(
            range(len(prompts)), key=lambda i: (group_key(prompts[i]), -len(self.texts[i]))
        )
        self.queue = deque(order)
        self.results: list[list[Completion | None]] = [[None] * settings.n for _ in prompts]
        self.stats = SamplingStats(prompts=len(prompts), samples=len(prompts) * settings.n)
        self.batch: _Batch | None = None
        self.bar: Any = None
        self.packed: PackedLinears | None = None

    def run(self, progress: bool, desc: str) -> SamplingResult:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        self.bar = tqdm(total=self.stats.samples, desc=desc, unit="sample", disable=not progress)
        widest = min(max(self.settings.batch_size, self.settings.n), self.stats.samples)
        if self.settings.pack_weights and self.device.type == "cpu" and widest >= MIN_ROWS:
            self.packed = PackedLinears(self.model)
            self.stats.packed_linears = len(self.packed.modules)
        try:
            while self.queue or (self.batch is not None and self.batch.live()):
                self._admit()
                if self.batch is not None and self.batch.live():
                    self._decode_step()
        finally:
            if self.packed is not None:
                self.packed.release()
                self.packed = None
        self.bar.close()
        if self.batch is not None:
            self.batch.cache.release()
            self.batch = None
        self.stats.seconds = time.perf_counter() - start
        completions = [[c for c in samples if c is not None] for samples in self.results]
        return SamplingResult(completions, self.stats)

    # ------------------------------------------------------------------------ prefill

    def _admit(self) -> None:
        """Prefill waiting prompts into the free slots, if a whole prompt's rows fit."""
        n, batch = self.settings.n, self.batch
        if batch is not None and not batch.live():
            batch.cache.release()
            self.batch = batch = None
        free = self.settings.batch_size if batch is None else len(batch.dead())
        count = max(free // n, 1 if batch is None else 0)
        if not self.queue or count == 0:
            return
        group = group_key(self.prompts[self.queue[0]])
        chosen: list[int] = []
        while (
            self.queue and len(chosen) < count and group_key(self.prompts[self.queue[0]]) == group
        ):
            chosen.append(self.queue.popleft())
        prefill, mask, next_positions, logits = self._prefill(chosen)
        rows = [
            _Row(prompt, j, [], None if self.settings.greedy else self._generator(prompt, j))
            for prompt in chosen
            for j in range(n)
        ]
        sources = [position for position in range(len(chosen)) for _ in range(n)]
        self._append_tokens(rows, logits[sources])
        going = [
            (row, source)
            for row, source in zip(rows, sources, strict=True)
            if not self._finish_if_done(row)
        ]
        if going:
            self._place(going, prefill, mask, next_positions)

    def _prefill(
        self, chosen: list[int]
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chosen prompts through the model; (cache, mask, next positions, last logits)."""
        started = time.perf_counter()
        texts = [self.texts[i] for i in chosen]
        prompts = [self.prompts[i] for i in chosen]
        inputs = encode_batch(self.processing, texts, prompts, self.is_vlm)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        done = prefill(self.model, self.call, _base_config(self.model), inputs)
        self.stats.prefill_forwards += done.forwards
        self.stats.prefill_rows += len(chosen)
        self.stats.shared_prefix_tokens += done.shared
        self.stats.prompt_tokens += int(inputs["attention_mask"].sum())
        self.stats.prefill_seconds += time.perf_counter() - started
        return done.cache, done.mask, done.next_positions, done.logits

    def _generator(self, prompt: int, index: int) -> torch.Generator:
        return sample_generator(self.settings.seed, prompt, index)

    def _place(
        self,
        going: list[tuple[_Row, int]],
        prefill: DynamicCache,
        mask: torch.Tensor,
        next_positions: torch.Tensor,
    ) -> None:
        """Put the prefilled rows that go on into dead slots (a new batch if there is none)."""
        rows = [row for row, _ in going]
        sources = [source for _, source in going]
        if self.batch is None:
            waiting = len(self.queue) * self.settings.n
            slots = max(len(rows), min(self.settings.batch_size, len(rows) + waiting))
            width, new = mask.shape[1], self.settings.max_new_tokens + 1
            if self.shared:
                cache = SharedPromptCache(prefill, slots, self.settings.n, capacity=new)
            else:
                cache = SlotCache(prefill, slots, width, width + new)
            empty = torch.zeros(slots, dtype=torch.long, device=self.device)
            self.batch = _Batch(cache, [None] * slots, empty, empty.clone())
        batch = self.batch
        slots = batch.dead()[: len(rows)]
        batch.cache.place(slots, prefill, sources, mask, live=batch.live())
        index = torch.tensor(slots, device=self.device)
        batch.next_positions[index] = next_positions[sources].to(self.device)
        batch.last_tokens[index] = torch.tensor(
            [row.tokens[-1] for row in rows], device=self.device
        )
        for slot, row in zip(slots, rows, strict=True):
            batch.rows[slot] = row

    # ------------------------------------------------------------------------ decode

    def _decode_step(self) -> None:
        batch = self.batch
        mask = batch.cache.open_column(grow=max(16, self.settings.max_new_tokens // 2))
        route = attending(self.decoder_configs, batch.cache) if self.shared else nullcontext()
        packed = self.packed.using() if self.packed is not None else nullcontext()
        with route, packed:
            logits = forward(
                self.model,
                self.call,
                batch.cache,
                input_ids=batch.last_tokens.unsqueeze(-1),
                attention_mask=mask,
                position_ids=decode_positions(self.call, batch.next_positions),
            )
        batch.cache.advance()
        batch.next_positions += 1
        live = batch.live()
        self.stats.decode_steps += 1
        self.stats.decode_rows += len(batch.rows)
        self.stats.live_rows += len(live)
        rows = [batch.rows[slot] for slot in live]
        if len(live) == len(batch.rows):  # no dead slot: no copy of the (rows, vocab) logits
            batch.last_tokens = self._append_tokens(rows, logits)
        else:
            index = torch.tensor(live, device=self.device)
            batch.last_tokens[index] = self._append_tokens(rows, logits[index])
        finished = False
        for slot, row in zip(live, rows, strict=True):
            if self._finish_if_done(row):
                batch.rows[slot] = None
                finished = True
        if finished:
            self._shrink()

    def _append_tokens(self, rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        settings = self.settings
        generators = None if settings.greedy else [row.generator for row in rows]
        tokens = choose_tokens(
            logits,
            generators,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
        )
        for row, token in zip(rows, tokens.tolist(), strict=True):
            row.tokens.append(token)
        return tokens

    def _finish_if_done(self, row: _Row) -> bool:
        reason = self.check.reason(row.tokens)
        if reason is None:
            return False
        self.results[row.prompt][row.index] = Completion(
            self.check.text(row.tokens), row.tokens, reason
        )
        self.stats.new_tokens += len(row.tokens)
        self.bar.update(1)
        return True

    def _shrink(self) -> None:
        """Drop dead slots once no prompt waits for them; let unused columns on the left go."""
        batch = self.batch
        live = batch.live()
        if not live:
            return
        if not self.queue and len(live) < len(batch.rows):
            order = batch.cache.keep(live)
            index = torch.tensor(order, device=self.device)
            batch.rows = [batch.rows[slot] for slot in order]
            batch.next_positions = batch.next_positions[index]
            batch.last_tokens = batch.last_tokens[index]
            live = list(range(len(order)))
        batch.cache.trim(live)


def _base_config(model: Any) -> Any:
    return base_model(model).config
