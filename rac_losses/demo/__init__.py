"""``rac-demo``: a complete GRPO vs GRPO+RAC experiment on a synthetic visual QA task, offline on a CPU.

Not part of the loss core: it uses the core only through its public API, like any custom trainer.
"""
