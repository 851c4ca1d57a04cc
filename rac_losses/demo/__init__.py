"""``rac-demo``: RAC as the paper (reward bonuses on stated confidence), this package's RAC losses, RLCR and
GRPO, on the same synthetic visual QA task with the same budget, offline on a CPU.

Not part of the loss core: it uses the core only through its public API, like any custom trainer.
"""
