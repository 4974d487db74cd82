"""video stage of cmmd."""
