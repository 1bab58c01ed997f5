"""Labels, quality signals and the quality report (arrive with [8/8])."""
