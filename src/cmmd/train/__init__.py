"""train stage of cmmd."""
