"""Hub model-card templates, one per model_type plus generic.md; installed as the package data `medheads.model_cards`."""
