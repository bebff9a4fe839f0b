"""Where the model math runs: inline or on Ray actors, and local training."""
