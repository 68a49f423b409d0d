"""Co-registration of paired scans from two sessions.

- `api`: `register_dataset` writes a registered copy of a raw dataset beside it (`autosr register`).
- `pairwise`: `register_images`, one input to its target (rigid, optionally affine; Mattes MI).
- `misalignment`: how far apart a pair is, measured by registering it (used by verify and the fingerprint).
- `transforms`: transforms as plain numbers, header moves, displacement measures.

N4 bias-field correction, which registration and the `n4_zscore` normalization share, is
`autosr.imaging.bias_field` (`autosr.registration.bias_field` re-exports it). Nothing is imported here.
"""
