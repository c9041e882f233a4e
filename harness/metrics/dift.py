"""DIFT features (Tang et al.): one noisy UNet pass at t = 261, the `up_blocks[up_ft_index]` output,
averaged over an ensemble of noise draws. Shared by both mean-distance protocols.

Only the UNet up to the wanted block runs (`unet_through_up_block`), so the two high-resolution up blocks
(most of the UNet's cost) are skipped without changing the feature.

`latent="sample"` (DragDiffusion): every ensemble copy gets its own VAE sample, drawn as
mean + std·ε from one encoder pass (identical to encoding the repeated image); `latent="mode"`
(RegionDrag): all copies share the distribution mode. The added noise is independent per copy in both.

`compiled=True` runs the UNet part and the VAE encoder through `torch.compile` (inductor fuses the
normalisations and elementwise work around the convolutions and attention: 1.4× faster on an H100). Opt-in:
fused kernels round differently, so the features move at fp16 rounding level (benchmarks/NOTES.md measures
by how much), and every new input shape costs a compilation, so it only pays on a fixed-shape protocol
(`md_dift@regiondrag`'s 768²).
"""
from __future__ import annotations

import torch

from harness.diffusion.features import module_view, unet_through_up_block
from harness.diffusion.graphs import CAPTURE_LOCK


class DiftFeaturizer:
    def __init__(self, models, t: int = 261, up_ft_index: int = 1, ensemble: int = 8, compiled: bool = False) -> None:
        from diffusers import DDIMScheduler

        self.models = models
        self.t = t
        self.up_ft_index = up_ft_index
        self.ensemble = ensemble
        self.compiled = compiled
        self._warm = False  # a compiled featuriser has run once (compiled and loaded its kernels)
        trunk = unet_through_up_block(models.unet, up_ft_index)
        self.trunk, self.vae = trunk, models.vae
        if compiled:  # the two heavy fixed-shape parts: the UNet trunk and the VAE encoder's convolution stack
            self.trunk = torch.compile(trunk, dynamic=False, fullgraph=True)
            self.vae = module_view(models.vae, encoder=torch.compile(models.vae.encoder, dynamic=False, fullgraph=True))
        # DIFT only uses add_noise, which depends on the betas alone (not on the prediction type).
        self.scheduler = DDIMScheduler.from_config(models.scheduler_config)
        self._prompts: dict[str, torch.Tensor] = {}

    def _prompt(self, prompt: str) -> torch.Tensor:
        if prompt not in self._prompts:
            if len(self._prompts) > 256:
                self._prompts.clear()
            self._prompts[prompt] = self.models.encode_prompt(prompt)
        return self._prompts[prompt]

    def __call__(self, images: torch.Tensor, prompt: str, latent: str, generator: torch.Generator) -> torch.Tensor:
        """`images`: (B, 3, H, W) in [-1, 1] → (B, C, h, w), each the mean over its ensemble (`features`).

        A compiled featuriser's first call compiles and loads new kernel modules, which a CUDA graph capture
        in another thread does not survive (measured on an H100 with scoring during editing: the run died
        with a CUDA error), so that call holds `CAPTURE_LOCK`; captures of new sizes wait for it."""
        if not self.compiled or self._warm:
            return self.features(images, prompt, latent, generator)
        with CAPTURE_LOCK:
            out = self.features(images, prompt, latent, generator)
        self._warm = True
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor, prompt: str, latent: str, generator: torch.Generator) -> torch.Tensor:
        """`images`: (B, 3, H, W) in [-1, 1] → (B, C, h, w), each the mean over its ensemble.

        The B images go through the VAE in one call and their B × ensemble noisy copies through the UNet in
        one call (the MD protocols featurise source and edited together: 16 copies keep the GPU busy where
        8 leave it launch-bound). Random numbers are drawn image by image, VAE sample noise then UNet
        noise, exactly as one call per image would draw them, so batching leaves the draws unchanged."""
        m = self.models
        x = images.to(m.device, m.dtype)
        dist = self.vae.encode(x).latent_dist
        copies = (self.ensemble, *dist.mean.shape[1:])
        noisy, t = [], torch.tensor(self.t, dtype=torch.long, device=m.device)
        for i in range(len(x)):
            if latent == "sample":
                eps = torch.randn(copies, generator=generator, device=m.device, dtype=dist.mean.dtype)
                z = dist.mean[i] + dist.std[i] * eps
            elif latent == "mode":
                z = dist.mode()[i].expand(copies)
            else:
                raise ValueError(f"latent must be 'sample' or 'mode', got {latent!r}")
            z = z * m.vae.config.scaling_factor
            noise = torch.randn(copies, generator=generator, device=m.device, dtype=z.dtype)
            noisy.append(self.scheduler.add_noise(z, noise, t))
        noisy = torch.cat(noisy)
        text = self._prompt(prompt).expand(len(noisy), -1, -1)
        feature = self.trunk(noisy, t, encoder_hidden_states=text, return_dict=False)[0]
        return feature.reshape(len(x), self.ensemble, *feature.shape[1:]).mean(dim=1)
