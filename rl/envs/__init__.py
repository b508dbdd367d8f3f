"""Thin views over the simulation core: batched (training), gymnasium (joint action), PettingZoo."""
