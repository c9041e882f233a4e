"""`decode_to_uint8` quantises on the device; it must equal the references' host-side numpy formulation
`(x * 255).astype(np.uint8)` bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.diffusion.latents import decode_to_uint8

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_quantisation_equals_numpy_for_every_half_value_in_the_unit_interval(device):
    bits = torch.arange(0, 2 ** 16, dtype=torch.int32).to(torch.int16).view(torch.float16)
    values = bits[torch.isfinite(bits) & (bits >= 0) & (bits <= 1)]
    assert len(values) == 15362  # all of them, subnormals included
    expected = (values.numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal((values.to(device) * 255).to(torch.uint8).cpu().numpy(), expected)
    floats = torch.rand(100_000, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal((floats.to(device) * 255).to(torch.uint8).cpu().numpy(),
                                  (floats.numpy() * 255).astype(np.uint8))


class IdentityVAE:
    """Decodes a latent to itself (3 channels), so the test controls the float image exactly."""

    dtype = torch.float32

    class config:
        scaling_factor = 1.0

    def decode(self, latent):
        return type("Out", (), {"sample": latent})()


def test_decode_to_uint8_matches_the_reference_formulation():
    latent = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2  # beyond [-1, 1]
    image = (latent / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    reference = (image * 255).astype(np.uint8)
    np.testing.assert_array_equal(decode_to_uint8(IdentityVAE(), latent), reference)
