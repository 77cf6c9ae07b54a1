"""Full-scale launch tooling: the planner (`nebula plan`, memory and compute estimates per pipeline
step before any GPU is rented) and the launcher (`job.train`: a training stage's heavy step in the
kernel or as an `accelerate launch` job; `train_entry`: one process of that job)."""
