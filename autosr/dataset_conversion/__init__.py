"""Converters from public dataset layouts, and synthetic paired dataset generators (`autosr.dataset_conversion`)."""
