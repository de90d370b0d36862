"""Every benchmark of fraudstream, in one place: ``fraudstream bench scoring|e2e`` and the
``python -m fraudstream.bench.<name>`` modules (features, reference, validation, model_cost, quality_*).

Benchmarks sit in the shell because they start stacks and workers; nothing below the shell imports them.
The per-record baselines the end-to-end benchmark compares with (``baselines.py``) reach the worker as a
``streams.pipeline.RecordPath`` chosen by ``fraudstream worker``, never by the pipeline itself.
"""
