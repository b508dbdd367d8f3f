"""The offloading simulator: one numpy core (`core.Simulator`) and its pluggable pieces."""
