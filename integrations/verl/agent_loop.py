"""verl agent loop ``rac_single_turn``: single-turn rollouts, some emitted with a corrupted-image twin.

The plugin registers the loop by its import path
(``actor_rollout_ref.rollout.agent.default_agent_loop=rac_single_turn``); verl imports this module where a
worker builds the loop.
It runs verl's :class:`SingleTurnAgentLoop` unchanged, then, for the share of rollouts that
``rac.corruption`` selects (:meth:`CorruptionPolicy.selects` on the rollout key), returns
``[twin, clean]``: the twin has the clean output's prompt and response token ids, response mask and
rollout log-probs, and every prompt image corrupted with the rollout's one ``(name, severity)``
choice at the same size and mode, so the processor gives it the same vision grid and token count
(videos and audio are left as they are).
The clean output comes last because verl's v1 worker (``AgentLoopWorkerTQ``) scores ``outputs[-1]``
and copies that reward to the earlier outputs; each output becomes its own row
(``{uid}_{session_id}_{i}``), with ``multi_modal_inputs`` recomputed from its own images. verl's
validation keeps only each session's last output for its metrics, so twins leave validation scores alone.

With twins configured, every output carries in ``extra_fields``: ``rac_pair`` (str, ``"{uid}/{session_id}"``: shared by a clean
row and its twin, unique per rollout), ``rac_severity`` (int, 0 clean, 1..5 twin) and
``rac_corruption`` (str, the corruption name, ``""`` for clean). The rollout key is that same string,
so a rollout's corruption is a pure function of ``(rac.corruption.seed, uid, session_id)`` (verl's
trainer draws a fresh uuid4 ``uid`` per prompt and step: the choices differ between runs).

Options come from the full config's top-level ``rac`` node (``+rac.corruption.fraction=0.5``), read by
:meth:`RACSettings.from_options`. When :attr:`RACSettings.uses_twins` is false the loop returns exactly
what :class:`SingleTurnAgentLoop` returns. A prompt without images gets no twin.

Needs verl's v1 trainer (``trainer.use_v1=true``, the default): the legacy worker accepts one output per
rollout and passes no ``session_id``.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from rac_losses.corruption import CorruptionPolicy
from rac_losses.integrations.settings import RACSettings

from .plugin import AGENT_LOOP_NAME
from .rows import CORRUPTION_FIELD, PAIR_FIELD, SEVERITY_FIELD

__all__ = ["AGENT_LOOP_NAME", "RACSingleTurnAgentLoop"]

logger = logging.getLogger(__name__)


class RACSingleTurnAgentLoop(SingleTurnAgentLoop):
    """:class:`SingleTurnAgentLoop` that adds a corrupted-image twin to a configured share of rollouts.

    Raises (at construction):
        ValueError: the config's ``rac`` node holds an unknown option or a bad value.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        node = self.config.get("rac")
        options = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        self.rac_settings = RACSettings.from_options(options)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput | list[AgentLoopOutput]:
        """One rollout: ``[twin, clean]`` when selected and the prompt has images, else ``[clean]``.

        Without twins configured (``uses_twins`` false), the plain :class:`SingleTurnAgentLoop` output.

        Raises:
            ValueError: ``uid`` or ``session_id`` missing from ``kwargs`` (not verl's v1 agent-loop worker).
        """
        clean = await super().run(sampling_params, **kwargs)
        if not self.rac_settings.uses_twins:
            return clean
        key = _rollout_key(kwargs)
        clean.extra_fields.update(_flags(key, 0, ""))
        policy = self.rac_settings.corruption
        if not policy.selects(key):
            return [clean]
        images = (clean.multi_modal_data or {}).get("images")
        if not images:
            logger.debug("rollout %s has no image: no corrupted twin", key)
            return [clean]
        corrupted = await self.loop.run_in_executor(None, _corrupt_all, policy, images, key)
        name, severity, _ = policy.choose(key)
        return [_twin(clean, corrupted, _flags(key, severity, name)), clean]


def _rollout_key(kwargs: dict[str, Any]) -> str:
    missing = [k for k in ("uid", "session_id") if k not in kwargs]
    if missing:
        raise ValueError(
            f"{AGENT_LOOP_NAME} needs the rollout's {' and '.join(missing)}, which verl's v1 agent-loop worker "
            "passes (trainer.use_v1=true)"
        )
    return f"{kwargs['uid']}/{int(kwargs['session_id'])}"


def _flags(pair: str, severity: int, corruption: str) -> dict[str, Any]:
    return {PAIR_FIELD: pair, SEVERITY_FIELD: int(severity), CORRUPTION_FIELD: corruption}


def _corrupt_all(policy: CorruptionPolicy, images: list[Any], key: str) -> list[Any]:
    """Every image corrupted with ``key``'s one ``(name, severity, seed)``; the noise still differs per
    image, because a corruption's random stream also hashes the image's pixels."""
    return [policy(image, key) for image in images]


def _twin(clean: AgentLoopOutput, images: list[Any], flags: dict[str, Any]) -> AgentLoopOutput:
    """``clean`` with its images replaced and its own ``extra_fields`` and ``metrics`` (no shared dicts)."""
    return clean.model_copy(
        update={
            "multi_modal_data": {**clean.multi_modal_data, "images": images},
            "extra_fields": {**clean.extra_fields, **flags},
            "metrics": clean.metrics.model_copy(),
        }
    )
