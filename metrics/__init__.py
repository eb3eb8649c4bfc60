"""``evaluate`` metric modules of hf-trust, one folder per metric (``metrics/<name>/<name>.py`` plus
its metric card ``README.md``), installed as ``hf_trust.metrics`` and loaded with
``evaluate.load(hf_trust.metric_path("<name>"))`` from any working directory."""
