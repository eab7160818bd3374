"""Stage 2: run a model over entity texts and cache the residual stream at every layer."""
