"""Full-scale launch tooling: the planner (`nebula plan`, memory and compute estimates per pipeline
step before any GPU is rented); the launcher that runs a step's heavy part through
`accelerate launch` will live beside it."""
