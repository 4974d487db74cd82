"""Applications built on the stages below: the demo, the study runner, the MOS app, previews."""
