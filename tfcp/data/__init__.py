"""tfcp.data."""
