"""tfcp.modeling."""
