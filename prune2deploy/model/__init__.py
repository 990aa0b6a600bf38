"""The user's model: loading it, its example inputs and outputs, its facts (MACs, params), fidelity."""
