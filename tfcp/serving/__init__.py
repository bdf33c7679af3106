"""tfcp.serving."""
