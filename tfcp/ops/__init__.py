"""tfcp.ops."""
