"""What a model is asked to do: load it, its loss, its predictions, its clean-data measure.

``classification`` (sequence classifiers) is the one task today; a causal-LM task plugs in
beside it with the same functions.
"""
