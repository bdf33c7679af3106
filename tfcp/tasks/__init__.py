"""tfcp.tasks: the glue between a model, its inputs, losses and evaluator, used by the trainer."""
