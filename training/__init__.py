"""Offline trainer and model lifecycle.

- ``dataset``: history files → offline features (``features/``) → handbook folds → ``tf.data``.
- ``model``: the Keras DNN with its preprocessing inside; seed ensembles; early stopping on AP.
- ``distribute``: ``tf.distribute`` strategy by configuration (default, mirrored, multi-worker).
- ``metrics`` / ``evaluate``: AUC ROC, AP, Card Precision@100; per-fold runs with a pluggable
  ``ScoreProvider`` (offline here, stream in the shell's ``fraudstream.evaluation``); JSON + PNG reports.
- ``export``: TF Serving layout, warmup records, metadata with drift references, TFLite int8.
- ``registry``: versions, ``stable``/``canary`` labels, promotion gate, ``models.config``.
- ``pipeline``: one training job end to end (what ``train``, ``retrain`` and the service run).
- ``service`` / ``triggers``: one-job-at-a-time trainer fed by CLI, HTTP and the retrain topic.
"""
