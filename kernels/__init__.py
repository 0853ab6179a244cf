"""Device side of triton_lstm: @triton.jit kernels and the thin helper that launches a plan."""
