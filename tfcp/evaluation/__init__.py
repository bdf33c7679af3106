"""tfcp.evaluation."""
