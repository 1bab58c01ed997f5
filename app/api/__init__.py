"""HTTP plumbing shared by every room: dependencies, the body-size limit, health, and the router that mounts the rooms."""
