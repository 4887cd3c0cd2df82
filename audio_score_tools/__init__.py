"""Tools for tests, the demo and benchmarks: tiny real-format models, media files, ready workspaces."""
