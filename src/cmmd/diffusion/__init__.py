"""diffusion stage of cmmd."""
