"""Official PyTorch checkpoints → human3r-jax (installed as `human3r_jax.converters`)."""
