"""Dataset snapshots, exports and fine-tuning jobs (arrive with [5/8])."""
