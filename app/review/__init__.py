"""Review queue (arrives with [4/8])."""
