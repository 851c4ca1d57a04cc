"""Image corruptions for clean/corrupted twins (installed as ``rac_losses.corruption``)."""
