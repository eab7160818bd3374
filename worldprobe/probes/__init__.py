"""Stage 3: probes (ridge, MLP), metrics, controls and neuron search on cached activations."""
