"""commands stage of cmmd."""
