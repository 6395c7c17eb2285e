"""The model transform: PreferenceSample -> TokenizedPair (chat template, processor, truncation).

The prompt is rendered with the model's chat template and tokenized once; for vision samples
the model's processor runs once per pair on the prompt and its images, so the image tokens are
expanded once and the pixel tensors are shared by the chosen and the rejected response. Each
response is the template's assistant turn after the prompt, ending with EOS.

Truncation never cuts through an image: responses are cut first (from the end); a text prompt
longer than ``max_prompt_length`` keeps its last tokens; a sample whose prompt (with its image
tokens) leaves no room for a response raises :class:`SampleTooLongError` naming its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mmdpo.images import open_image
from mmdpo.messages import text_only
from mmdpo.types import Message, PreferenceSample, TokenizedPair

# Used when a tokenizer has no chat template (base models): a plain, documented format.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join('') %}{% endif %}"
    "{{ message['role'] | capitalize }}: {{ text }}\n\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}"
)

# Keys of processor outputs that are per token, not per image; the collator rebuilds them.
_PER_TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


class SampleTooLongError(ValueError):
    """A sample whose prompt alone (image tokens included) does not fit ``max_length``."""

    def __init__(self, sample_id: str, prompt_tokens: int, max_length: int):
        self.sample_id = sample_id
        super().__init__(
            f"sample {sample_id}: prompt: {prompt_tokens} tokens (image tokens included) leave "
            f"no room for a response within max_length={max_length}; raise data.max_length "
            "or shorten the prompt (image tokens are never cut)"
        )


@dataclass
class TransformSettings:
    max_length: int = 1024
    """Maximum tokens of prompt + one response."""
    max_prompt_length: int | None = None
    """Cap on text prompt tokens (kept from the end); vision prompts are never cut."""


def _with_image_parts(prompt: list[Message], n_images: int) -> list[Message]:
    """Make sure the prompt's messages hold exactly one image part per image.

    Prompts from adapters that kept ``<image>`` placeholders as parts are left as they are;
    a plain-text prompt gets the image parts before the text of its first user turn.
    """
    count = sum(
        1
        for m in prompt
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )
    if count == n_images:
        return prompt
    if count:
        raise ValueError(f"prompt has {count} image parts but the sample has {n_images} images")
    messages = [dict(m) for m in prompt]
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content", "")
            text_parts = (
                [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            )
            message["content"] = [{"type": "image"}] * n_images + text_parts
            return messages
    raise ValueError("prompt has no user turn to attach the images to")


class PairTransform:
    """Tokenizes preference samples for one model.

    Args:
        processing: the model's tokenizer (text models) or processor (VLMs).
        settings: length limits.
        is_vlm: whether ``processing`` is a multimodal processor.
    """

    def __init__(self, processing: Any, settings: TransformSettings, *, is_vlm: bool = False):
        self.processing = processing
        self.settings = settings
        self.is_vlm = is_vlm
        self.tokenizer = getattr(processing, "tokenizer", processing) if is_vlm else processing
        self._template_owner = processing if is_vlm else self.tokenizer
        if getattr(self._template_owner, "chat_template", None) is None:
            self._chat_template: str | None = FALLBACK_CHAT_TEMPLATE
        else:
            self._chat_template = None
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; set one before training")
        self.eos_token_id = int(eos)

    def render(self, messages: list[Message], *, add_generation_prompt: bool) -> str:
        kwargs = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
        if self._chat_template is not None:
            kwargs["chat_template"] = self._chat_template
        return self._template_owner.apply_chat_template(messages, **kwargs)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        """One batched tokenizer call (the Rust tokenizer spreads it over the cores)."""
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def response_text(self, prompt: list[Message], prompt_text: str, response: str) -> str:
        """The assistant turn after the prompt, as the chat template renders it."""
        full = self.render(
            [*prompt, {"role": "assistant", "content": response}], add_generation_prompt=False
        )
        if full.startswith(prompt_text):
            return full[len(prompt_text) :]
        return response  # templates that rewrite earlier turns: fall back to the raw text

    def end_with_eos(self, ids: list[int]) -> list[int]:
        """Keep the template's end-of-turn, drop what follows it (a newline); end with EOS."""
        if self.eos_token_id in ids:
            return ids[: len(ids) - ids[::-1].index(self.eos_token_id)]
        while len(ids) > 1 and not self.tokenizer.decode(ids[-1:]).strip():
            ids = ids[:-1]
        return [*ids, self.eos_token_id]

    def response_ids(self, prompt: list[Message], prompt_text: str, response: str) -> list[int]:
        """The assistant turn after the prompt as the template renders it, ending with EOS."""
        return self.end_with_eos(self._encode(self.response_text(prompt, prompt_text, response)))

    def _text_prompt(self, sample: PreferenceSample) -> tuple[list[Message], str]:
        prompt = text_only(sample.prompt) if not self.is_vlm else sample.prompt
        return prompt, self.render(prompt, add_generation_prompt=True)

    def _cap_prompt(self, ids: list[int]) -> list[int]:
        limit = self.settings.max_prompt_length
        return ids[-limit:] if limit is not None and len(ids) > limit else ids

    def _prompt(
        self, sample: PreferenceSample, images: list[Any] | None
    ) -> tuple[list[int], dict[str, torch.Tensor] | None, list[Message], str]:
        if not images:
            prompt, text = self._text_prompt(sample)
            return self._cap_prompt(self._encode(text)), None, prompt, text
        if not self.is_vlm:
            raise ValueError(f"sample {sample.id}: images: this model is text-only")
        prompt = _with_image_parts(sample.prompt, len(images))
        text = self.render(prompt, add_generation_prompt=True)
        pil_images = [open_image(ref) for ref in images]
        out = self.processing(text=[text], images=[pil_images], return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        image_inputs = {
            k: v for k, v in out.items() if k not in _PER_TOKEN_KEYS and isinstance(v, torch.Tensor)
        }
        # Processors that batch images per text return (1, n_images, ...): drop the batch dim so
        # that images concatenate on dim 0.
        for key, batched_dims in (("pixel_values", 5), ("pixel_attention_mask", 4)):
            value = image_inputs.get(key)
            if value is not None and value.dim() == batched_dims:
                image_inputs[key] = value[0]
        return ids, image_inputs, prompt, text

    def generation_inputs(self, sample: PreferenceSample) -> dict[str, torch.Tensor]:
        """The sample's prompt as ``model.generate`` takes it: a batch of one, rendered with the
        generation prompt, its images through the processor (every key the processor gives)."""
        if sample.images and self.is_vlm:
            prompt = _with_image_parts(sample.prompt, len(sample.images))
            text = self.render(prompt, add_generation_prompt=True)
            images = [open_image(ref) for ref in sample.images]
            return dict(self.processing(text=[text], images=[images], return_tensors="pt"))
        _, text = self._text_prompt(sample)
        ids = torch.tensor([self._cap_prompt(self._encode(text))])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def __call__(self, sample: PreferenceSample) -> TokenizedPair:
        prompt_ids, image_inputs, prompt, prompt_text = self._prompt(sample, sample.images)
        chosen_ids = self.response_ids(prompt, prompt_text, sample.chosen)
        rejected_prompt_ids = rejected_image_inputs = None
        rejected_prompt, rejected_prompt_text = prompt, prompt_text
        if sample.rejected_images is not None:
            rejected_prompt_ids, rejected_image_inputs, rejected_prompt, rejected_prompt_text = (
                self._prompt(sample, sample.rejected_images)
            )
        rejected_ids = self.response_ids(rejected_prompt, rejected_prompt_text, sample.rejected)
        return self._assemble(
            sample,
            prompt_ids,
            chosen_ids,
            rejected_ids,
            image_inputs=image_inputs,
            rejected_prompt_ids=rejected_prompt_ids,
            rejected_image_inputs=rejected_image_inputs,
        )

    def many(self, samples: list[PreferenceSample]) -> list[TokenizedPair | Exception]:
        """Transform several samples; text samples share one batched tokenizer call.

        Returns one entry per sample, in order: the pair, or the exception that sample raised
        (the caller reports it by id).
        """
        results: list[TokenizedPair | Exception | None] = [None] * len(samples)
        texts: list[str] = []
        text_rows: list[int] = []
        for index, sample in enumerate(samples):
            try:
                if sample.images or sample.rejected_images is not None:
                    results[index] = self(sample)
                    continue
                prompt, prompt_text = self._text_prompt(sample)
                texts += [
                    prompt_text,
                    self.response_text(prompt, prompt_text, sample.chosen),
                    self.response_text(prompt, prompt_text, sample.rejected),
                ]
                text_rows.append(index)
            except (ValueError, OSError, TypeError) as err:
                results[index] = err
        encoded = self._encode_many(texts)
        for offset, index in enumerate(text_rows):
            prompt_ids, chosen_ids, rejected_ids = encoded[3 * offset : 3 * offset + 3]
            try:
                results[index] = self._assemble(
                    samples[index],
                    self._cap_prompt(prompt_ids),
                    self.end_with_eos(chosen_ids),
                    self.end_with_eos(rejected_ids),
                )
            except ValueError as err:
                results[index] = err
        return results  # type: ignore[return-value]

    def _assemble(
        self,
        sample: PreferenceSample,
        prompt_ids: list[int],
        chosen_ids: list[int],
        rejected_ids: list[int],
        *,
        image_inputs: dict[str, torch.Tensor] | None = None,
        rejected_prompt_ids: list[int] | None = None,
        rejected_image_inputs: dict[str, torch.Tensor] | None = None,
    ) -> TokenizedPair:
        """Cut the responses to the length budget (never the prompt's image tokens)."""
        max_length = self.settings.max_length
        longest_prompt = max(len(prompt_ids), len(rejected_prompt_ids or []))
        budget = max_length - longest_prompt
        if budget < 1:
            raise SampleTooLongError(sample.id, longest_prompt, max_length)
        return TokenizedPair(
            id=sample.id,
            prompt_ids=prompt_ids,
            chosen_ids=chosen_ids[:budget],
            rejected_ids=rejected_ids[:budget],
            modality=sample.modality,
            source=sample.source,
            score_chosen=sample.score_chosen,
            score_rejected=sample.score_rejected,
            image_inputs=image_inputs,
            rejected_prompt_ids=rejected_prompt_ids,
            rejected_image_inputs=rejected_image_inputs,
        )
