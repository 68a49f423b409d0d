"""Image operations that several stages share: the foreground and the subject region (`foreground`), and N4
bias-field correction (`bias_field`). Registration, verification, planning, preprocessing, training,
prediction and evaluation all use them, so they sit below every one of those stages.
"""
