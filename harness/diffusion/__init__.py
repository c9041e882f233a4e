"""Shared diffusion plumbing: latents, inversions, attention control, feature capture.

Every method builds on these pieces instead of carrying its own copy (design.md, "Method adapters").
"""
