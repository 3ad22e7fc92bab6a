"""Support for the product, not part of the slide pipeline.

``demo`` (the quick-start run and its evaluation), ``synthetic`` (generated slides with known
truth, used by tests, benchmarks and the demo) and ``training_data`` (patch pairs for training).
The slide pipeline never imports this package.
"""
