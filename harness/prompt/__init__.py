"""Prompt editing plumbing (PIE-Bench): inversions, the two-branch guided sampler, Prompt-to-Prompt control.

Editors in `methods/` (p2p, masactrl, pnp) combine these pieces; the inversion is a config field of each
editor (`method.p2p.inversion=direct`), so every inversion × editor pair is one method id plus one value.
"""
