"""Experiments that need more than one library package: the N-token bandit and the length tasks.

The library packages ``llm/`` (causal LMs) and ``toy/`` (the categorical bandit) never import
each other, and neither imports ``analysis/`` or ``bench/``. An experiment that joins them lives
here: ``token_bandit`` turns the toy's bandit (π_ref, R1/R2) into a language-model task for the
``llm`` rounds harness; ``length_ref`` and ``length_tasks`` hold the length tasks' reference LM,
task rewards, preference data and stored-response sampler. Modules here may import ``toy``,
``llm`` and the core (``objectives``, ``rounds``, ``runio``); the sweeps and figures that use
them are in ``analysis/``.
"""
