"""``evaluate`` metric modules of hf-trust, one folder per metric (``metrics/<name>/<name>.py`` plus
its metric card ``README.md``), loadable with ``evaluate.load("metrics/<name>")`` from the repository
root or ``evaluate.load(hf_trust.metric_path("<name>"))`` from anywhere."""
