"""The generation pipeline: requests (what to ask), screening (what a reply yielded), accept (one step per dataset), runner (saturating the server), preview (a dry run)."""
