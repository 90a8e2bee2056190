"""Checkpoints: Hugging Face model folders located, read, paired and written one tensor at a time.

A module per job, imported by path (``from finemix.weights.reader import TensorReader``):

* ``locate``: a folder, a packaged copy or a Hub download; ``config.json``.
* ``formats``: the weight-file names and safetensors dtype codes shared by reader and writer.
* ``reader``: ``TensorReader`` hands out single tensors, so mixing holds at most one
  output model plus tensors in flight.
* ``names``: pairs a classifier's tensor names with a bare pre-trained encoder's.
* ``roles``: which tensor is the word embedding, the head, an FFN, declared per ``model_type``.
* ``pair``: ``open_pair`` opens, pairs and checks a fine-tuned and a pre-trained checkpoint.
* ``tokenizer_files``: vocabulary files and the same-vocabulary check.
* ``writer``: ``ShardedWriter`` streams safetensors shards; side files are copied.
* ``output``: atomic output folders and recovery from interrupted runs.
* ``hashing``: SHA-256 of files and model folders for the report.

Nothing heavy (torch, safetensors) is imported until a tensor is touched.
"""
