"""One module per method; each registers its recipe with ``hf_trust.demo.register_recipe``."""
