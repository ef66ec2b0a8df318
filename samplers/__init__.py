"""widebnn.samplers: posterior samplers for finite-width Bayesian networks."""
