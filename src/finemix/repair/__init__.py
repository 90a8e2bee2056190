"""The repair, top-down: checkpoint → E-PUR → mix → fine-tune (ρ rule) → report.

``purify`` (the whole repair) and the single steps ``mix_checkpoint`` / ``epur_checkpoint``
live in ``steps``; each stage is one module below it.
"""
