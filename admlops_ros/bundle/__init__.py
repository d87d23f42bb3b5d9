"""Engine bundles: spec.yaml (the typed schema of a model's numbers) and sha256-checked files."""
