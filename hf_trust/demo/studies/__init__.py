"""Research studies (multi-seed sweeps, ablations, experiment drivers) behind ``hf-trust demo --full`` and the
benchmarks: harness code that sits above the library and may import it, never the other way round."""
