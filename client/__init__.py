"""The `sweeplab` command line and the Python client: HTTP only, no server package imported."""
