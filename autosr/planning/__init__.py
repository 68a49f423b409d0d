"""Fingerprint extraction and experiment planning: `autosr plan` (api.py) ends by preprocessing what it planned."""
