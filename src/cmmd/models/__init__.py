"""models stage of cmmd."""
