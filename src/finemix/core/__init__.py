"""Pure math on tensors, in Δ form (Δ = θ_B − θ_Pre): no files, no models, no training.

``mixing`` (the Fine-mixing formula), ``epur`` (embedding purification), ``calibration``
(class-prior fitters), ``ratio_rule`` (when a ρ candidate is accepted), ``metrics``.
"""
