"""The generation engine: jobs, prompts, parsing, heuristic filters, the pipeline; its tables, service and router."""
