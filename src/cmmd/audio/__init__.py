"""audio stage of cmmd."""
