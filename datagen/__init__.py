"""Preference data made from model outputs: K sampled responses per prompt, scored, paired.

    mmdpo pairs prompts.jsonl pairs.jsonl --model runs/math --k 8        # datagen.pairs
    mmdpo score pairs.jsonl scored.jsonl --scorer reward_model --model RM  # datagen.scoring

- ``pairing``: the one pair-building core (deduplication, NaN scores, a pairing rule, the
  report); rules ``PaperMathRule`` (Uni-DPO's math pairs) and ``BestVsWorst``;
- ``math_pairs``: ``build_math_pairs``, the paper's math pairs (math-verify correctness);
- ``pairs``: the ``mmdpo pairs`` command (sampling through ``mmdpo.inference``);
- ``prompts``: its prompts file;
- ``scorers``, ``registry``: the rule and reward-model scorers, by name;
- ``scoring``: the ``mmdpo score`` command; ``output``: the pairs file both commands write.

Only tasks and the CLI import this package; it imports the engine (models only through
``mmdpo.inference``), the data adapters and evals' checkers (IFEval, CHAIR), never tasks.
"""
