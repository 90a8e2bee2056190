"""Shared helpers for the finemix benchmarks (plain scripts, not pytest).

* ``machine`` — CPU model, cores, library versions, git commit, load, the exact command; results writing.
* ``runner.run_job`` — runs one measurement in its OWN child process (``python child.py …``),
  so peak RSS is per method. The child resets its peak-RSS counter (``/proc/self/clear_refs`` 5)
  at the start of the timed region, samples ``RssAnon`` / ``RssFile`` every few ms on a thread
  (``probe.Probe``), and reports ``VmHWM``; the parent also records the child's lifetime ``ru_maxrss``
  via ``os.wait4``.
* ``checkpoints`` — "pre-trained" and "fine-tuned" checkpoint pairs (synthetic and MiniLM);
  ``fixtures`` — MiniLM, MR rows, the small backdoored victim.
* Jobs used by more than one script (finemix mix / E-PUR in ``mix_jobs``, fine-tune in
  ``finetune_jobs``, purify and the victim builder in ``purify_jobs``).
* ``stats`` — small table / verdict / fit helpers; ``cli`` — the options every script has.

Every child pre-imports torch, safetensors, transformers and finemix before its timed region,
so import cost is outside every timing and inside every RSS baseline alike.
"""
