"""OpenRLHF 0.11.x adapter: ``rac-openrlhf`` runs ``openrlhf.cli.train_ppo_ray`` with RAC inside.

- :mod:`.launcher`: the command (OpenRLHF's arguments plus ``--rac.*``), starts Ray with a worker setup hook;
- :mod:`.hook`: the setup hook, run in every Ray worker: installs the trainer and the group ids;
- :mod:`.trainer`: the ``ActorPPOTrainer`` subclass (partner tables before the update, metrics);
- :mod:`.rows`: the pre-update pass over the replay buffer (rows, twins, partner tables);
- :mod:`.loss`: the policy-loss wrapper adding the RAC terms per micro-batch;
- :mod:`.twins`: corrupted images through the model's processor;
- :mod:`.groups`: prompt-group ids where OpenRLHF computes advantages;
- :mod:`.reward`: a ``--reward.remote_url`` file (correctness plus the Brier reward of a verbalized confidence).

OpenRLHF is imported lazily, inside the functions that need it.
"""
