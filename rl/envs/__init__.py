"""Thin views over the simulation core: batched (training), gymnasium (joint action, one environment
or a vector of them), stable-baselines3's VecEnv, PettingZoo."""
