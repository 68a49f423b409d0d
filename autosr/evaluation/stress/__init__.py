"""Stress tests of a trained model: perturbed and lesioned scans, and whether its uncertainty, intervals and
per-scan flags predict its errors (`autosr stress-test`; documentation/trust.md)."""
