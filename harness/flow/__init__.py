"""Rectified-flow plumbing for the FLUX editors: the shifted schedule (schedule.py), latents, prompts and the
velocity call (latents.py), Euler and second-order ODE walks in both directions (solvers.py) and attention
control for MM-DiT blocks through diffusers attention processors (attention.py)."""
