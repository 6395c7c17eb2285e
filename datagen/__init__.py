"""Preference data made from model outputs: K sampled responses per prompt, scored, paired.

    mmdpo pairs prompts.jsonl pairs.jsonl --model runs/math --k 8        # datagen.pairs
    mmdpo score pairs.jsonl scored.jsonl --scorer reward_model --model RM  # datagen.scoring

- ``math_pairs``: the paper's math pairs (math-verify correctness, chosen above a threshold);
- ``pairs``: the ``mmdpo pairs`` command (sampling through ``mmdpo.inference``);
- ``scorers`` and ``scoring``: the rule and reward-model scorers, the ``mmdpo score`` command.

Tasks and the CLI use this package; it uses the engine, the data adapters and evals' checkers.
"""
