"""eval stage of cmmd."""
