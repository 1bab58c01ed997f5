"""Durable jobs: the queue in the database (claim, lease, fencing, requeue, cancel) and the worker that runs them."""
