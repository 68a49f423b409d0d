"""Fingerprint extraction and experiment planning (installed as `autosr.planning`)."""
