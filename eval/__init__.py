"""Built-in benchmarks: data source, prompt, answer extraction, metric and version per benchmark.

``eval.registry.BENCHMARKS`` names them all; ``eval.base`` defines the interface a generation
runner drives; ``eval.predictions.score_predictions`` scores responses generated elsewhere;
``eval.results.EvalResult`` saves a run (results JSON, per-sample JSONL, exports).
"""
