"""What a frozen network computes once and reuses: pooled features per image, boundary activations per view."""
