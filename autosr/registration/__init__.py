"""Co-registration of paired scans from two sessions, and bias-field correction.

- `api`: `register_dataset` writes a registered copy of a raw dataset beside it (`autosr register`).
- `pairwise`: `register_images`, one input to its target (rigid, optionally affine; Mattes MI).
- `misalignment`: how far apart a pair is, measured by registering it (used by verify and the fingerprint).
- `transforms`: transforms as plain numbers, header moves, displacement measures.
- `bias_field`: N4 bias-field correction (used by registration and the `n4_zscore` normalization).

Nothing is imported here, so `autosr.registration.bias_field` stays cheap to import.
"""
