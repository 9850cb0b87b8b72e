"""The attacked model: a generation pipeline (erasers and/or a UCE or ESD-x edit applied) with what attacks need.

White-box attacks differentiate through the text encoder and the erased UNet and compare it with the
original model, which is the same pipeline with its erasers switched off (``original()``); the black-box
attack only uses the tokenizer and the text encoder (``TextSide``), which erasers leave untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cpe.generation.prompt_csv import PromptRow
from cpe.generation.run import GenerationPipeline, batches


@contextmanager
def replaced_token_embeddings(text_encoder, values: Tensor) -> Iterator[None]:
    """Within the block, the text encoder's token-embedding lookup returns ``values`` (B, T, D) instead."""
    handle = text_encoder.get_input_embeddings().register_forward_hook(lambda _m, _i, out: values.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()


@dataclass
class TextSide:
    """Tokenizer and text encoder: all a black-box attack may use."""

    tokenizer: object
    text_encoder: torch.nn.Module

    @property
    def length(self) -> int:
        return self.tokenizer.model_max_length

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def word_ids(self, prompt: str) -> list[int]:
        """The prompt's tokens without BOS/EOS (an over-long prompt is an error naming it)."""
        ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        if len(ids) + 2 > self.length:
            raise ValueError(f"prompt {prompt!r} has {len(ids)} tokens; at most {self.length - 2} fit")
        return ids

    def sequence(self, words: Sequence[int]) -> list[int]:
        """BOS + ``words`` + EOS, padded to the tokenizer's length with its pad token."""
        tok = self.tokenizer
        ids = [tok.bos_token_id, *words, tok.eos_token_id]
        if len(ids) > self.length:
            raise ValueError(f"{len(words)} tokens do not fit the text encoder's {self.length - 2}")
        return ids + [tok.pad_token_id] * (self.length - len(ids))

    def sequences(self, words: Tensor) -> Tensor:
        """Row-wise ``sequence`` of a token matrix (N, L) -> (N, T), vectorised."""
        tok = self.tokenizer
        if words.shape[1] + 2 > self.length:
            raise ValueError(f"{words.shape[1]} tokens do not fit the text encoder's {self.length - 2}")
        ids = torch.full((len(words), self.length), tok.pad_token_id, dtype=torch.long)
        ids[:, 0] = tok.bos_token_id
        ids[:, 1 : 1 + words.shape[1]] = words
        ids[:, 1 + words.shape[1]] = tok.eos_token_id
        return ids

    def encode_ids(self, ids: Tensor) -> Tensor:
        """Text-encoder output (B, T, D) of token ids (B, T)."""
        return self.text_encoder(ids.to(self.device))[0]

    def encode_embeddings(self, ids: Tensor, token_embeddings: Tensor) -> Tensor:
        """Text-encoder output when the token embeddings (B, T, D_in) replace the lookup of ``ids`` (differentiable)."""
        with replaced_token_embeddings(self.text_encoder, token_embeddings):
            return self.text_encoder(ids.to(self.device))[0]

    def embedding_table(self) -> Tensor:
        return self.text_encoder.get_input_embeddings().weight


class Victim:
    """A loaded ``GenerationPipeline`` (the erased model) seen by an attack; its sampling settings are the config's."""

    def __init__(self, gen: GenerationPipeline) -> None:
        from diffusers import DDPMScheduler

        self.gen = gen
        pipe = gen.pipe
        for module in (pipe.unet, pipe.text_encoder, pipe.vae):
            module.requires_grad_(False)
        self.text = TextSide(pipe.tokenizer, pipe.text_encoder)
        self.noise_schedule = DDPMScheduler.from_config(pipe.scheduler.config)
        self.unet_evaluations = 0  # samples through the UNet with gradients or without (the white-box budget)

    @property
    def device(self) -> torch.device:
        return self.gen.device

    @property
    def erased(self) -> bool:
        return self.gen.network is not None or bool(self.weight_edits)

    @property
    def weight_edits(self) -> list:
        """The applied edits of the UNet's weights (UCE, ESD-x): each has ``restore()`` and ``apply()``."""
        return [edit for edit in (self.gen.uce, self.gen.esd) if edit is not None]

    @contextmanager
    def original(self) -> Iterator[None]:
        """The original model within the block: CPE gates off, a UCE or ESD-x edit undone (restored afterwards)."""
        network, edits = self.gen.network, self.weight_edits
        if network is not None:
            network.enabled = False
        for edit in edits:
            edit.restore()
        try:
            yield
        finally:
            for edit in edits:
                edit.apply()
            if network is not None:
                network.enabled = True
                network.clear_cache()

    def eps(self, latents: Tensor, timesteps: Tensor, cond: Tensor) -> Tensor:
        """The UNet's prediction (noise, or velocity for v-prediction models) in float32."""
        unet = self.gen.pipe.unet
        self.unet_evaluations += len(latents)
        out = unet(latents.to(unet.dtype), timesteps.to(latents.device), cond.to(unet.dtype)).sample
        return out.float()

    def noisy(self, x0: Tensor, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``batch`` noisy latents of random concept images at random timesteps: (x_t, t, the UNet's target)."""
        pick = torch.randint(len(x0), (batch,), generator=generator)
        noise = torch.randn((batch, *x0.shape[1:]), generator=generator).to(x0.device)
        steps = self.noise_schedule.config.num_train_timesteps
        t = torch.randint(0, steps, (batch,), generator=generator).to(x0.device)
        clean = x0[pick]
        x_t = self.noise_schedule.add_noise(clean, noise, t)
        if self.noise_schedule.config.prediction_type == "v_prediction":
            return x_t, t, self.noise_schedule.get_velocity(clean, noise, t)
        return x_t, t, noise

    @torch.no_grad()
    def concept_latents(self, prompt: str, seeds: Sequence[int]) -> Tensor:
        """Final latents of the original model's images of ``prompt`` (one per seed): the concept's images."""
        rows = [PromptRow(i, prompt, int(s), None) for i, s in enumerate(seeds)]
        with self.original():
            return self._sample(rows, output_type="latent").float()

    @torch.no_grad()
    def images(self, rows: Sequence[PromptRow]) -> np.ndarray:
        """uint8 images (N, H, W, 3) of prompt rows, sampled exactly as generate.py samples them (first image each)."""
        images = [self.gen.images(batch) for batch in batches(rows, self.gen.cfg.batch_size, self.gen.guidance)]
        return np.stack([np.asarray(row_images[0].convert("RGB")) for chunk in images for row_images in chunk])

    @torch.no_grad()
    def images_from_embeddings(self, rows: Sequence[PromptRow], prompt_embeds: Tensor) -> np.ndarray:
        """uint8 images of rows whose text-encoder outputs are given (N, T, D): the soft prompt's images."""
        out, start = [], 0
        for batch in batches(rows, self.gen.cfg.batch_size, self.gen.guidance):
            images = self._sample(batch, output_type="np", prompt_embeds=prompt_embeds[start : start + len(batch)])
            out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
            start += len(batch)
        return np.concatenate(out)

    def _sample(self, rows: Sequence[PromptRow], output_type: str, prompt_embeds: Tensor | None = None):
        """One pipeline call with generate.py's per-row latents, config guidance and negative prompt."""
        cfg, pipe = self.gen.cfg, self.gen.pipe
        latents, generators = self.gen._latents(rows)
        n = cfg.generate_num  # each row's first latent: its first image in generate.py
        latents, generators = latents[::n], generators[::n]
        if self.gen.network is not None:
            self.gen.network.clear_cache()
        text = {"prompt": [row.prompt + cfg.unconditional_prompt for row in rows]}
        if prompt_embeds is not None:
            negative = self.text.encode_ids(self.text.tokenizer(
                [cfg.negative_prompt] * len(rows), padding="max_length", max_length=self.text.length,
                truncation=True, return_tensors="pt").input_ids)
            text = {"prompt_embeds": prompt_embeds.to(self.device, pipe.unet.dtype),
                    "negative_prompt_embeds": negative.to(pipe.unet.dtype)}
        else:
            text["negative_prompt"] = [cfg.negative_prompt] * len(rows)
        guidance = {self.gen.guidance(row) for row in rows}
        if len(guidance) != 1:
            raise ValueError(f"one pipeline call needs one guidance scale, got {sorted(guidance)}")
        result = pipe(**text, height=cfg.height, width=cfg.width, num_inference_steps=cfg.num_inference_steps,
                      guidance_scale=guidance.pop(), num_images_per_prompt=1, latents=latents,
                      generator=generators, output_type=output_type)
        return result.images

    def records(self) -> dict:
        """What the attacked model is (for manifests): base model and erasers with their SHA-256."""
        return {"model": self.gen.model, "erasers": self.gen.eraser_records()}
