"""Engine bundles: spec.yaml (the typed schema of a model's numbers) and its sha256-checked files."""
