"""Pure logic: no I/O, no framework imports, nothing else from the project."""
