"""``wsisam-engine bench``: measurements printed as ratios from one run (never timed tests)."""
