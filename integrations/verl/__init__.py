"""RAC inside verl 0.9.x (``pip install rac-losses[verl]``).

verl imports :mod:`.plugin` at ``import verl`` (entry point group ``verl.plugins``), in the driver and in
every Ray worker. It registers:

- the v1 trainer mode ``rac`` (:mod:`.trainer`): ``trainer.v1.trainer_mode=rac`` turns RAC on, knobs
  under ``+rac.*``; ``+rac.formulation=reward`` (the default: the paper's reward bonuses, :mod:`.paper`,
  with the paper's reward :mod:`.paper_reward`) or ``loss`` (the RAC losses);
- the agent loop ``rac_single_turn`` (:mod:`.agent_loop`), which emits corrupted twins (loss formulation);

and ships an RLCR-style reward function for
``reward.custom_reward_function.path=pkg://rac_losses.integrations.verl.reward``. The loss formulation's
loss is :func:`.loss.rac_ppo_loss`; :mod:`.rows` translates verl's batch into its row contract.
"""
