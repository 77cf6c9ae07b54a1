"""Data curation: schemas, versioned datasets with manifests, ingest, sources and mixing.

Modules (one concern each; import the one you need, this package root imports nothing):
  schema     row schemas (sft, preference, rl), the task vocabulary, row validation
  versions   a data version on disk (data + version.json + four manifests) and its API
  ingest     local files / Hub ids -> schema rows, malformed rows to a quarantine file
  sources    offline real sources: reasoning-gym, lm-eval IFEval registry, HumanEval, ../shared/data
  mixing     per-source quotas -> one shuffled mix, with a change log between mixes
"""
