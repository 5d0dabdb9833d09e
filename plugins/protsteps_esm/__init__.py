"""Built-in protsteps plugin: The ESM-2 teacher (fair-esm) with a trainable tail and a frozen-trunk cache."""
