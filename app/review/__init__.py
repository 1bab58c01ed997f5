"""Review queue (arrives with [4/7])."""
