"""Generated data: the accuracy benchmark's families."""
