"""Multi-device offloading simulator, MAHPPO and baselines."""
