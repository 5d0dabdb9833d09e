"""Built-in protsteps plugin: Optimisation schemes: joint training and STEPS' pseudo bi-level optimisation."""
