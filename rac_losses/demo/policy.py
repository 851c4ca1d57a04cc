"""A tiny vision-language policy in pure torch.

A conv encoder turns a 32x32 RGB image into a 4x4 grid of visual tokens; a small causal transformer runs
over ``[visual tokens, question tokens (ending in <sep>), response tokens]`` and predicts the next token
over the whole vocabulary (so it *can* produce malformed answers). About 150k parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rac_losses.demo.task import EOS, PAD, QUESTION_LEN, VOCAB

__all__ = ["PolicyConfig", "TinyVLPolicy", "Rollout", "images_to_tensor"]

N_VISUAL = 16


@dataclass(frozen=True)
class PolicyConfig:
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    max_response: int = 4


def images_to_tensor(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n, H, W, 3]`` uint8 numpy -> ``[n, 3, H, W]`` float32 in ``[-1, 1]`` on ``device``."""
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _out(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal self-attention over ``x``; also returns its keys and values (for :meth:`forward_suffix`)."""
        q, k, v = self._qkv(x)
        return self._out(x, F.scaled_dot_product_attention(q, k, v, is_causal=True)), (k, v)

    def forward_suffix(self, x: torch.Tensor, prefix_kv: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """Suffix tokens ``x [n, Ls, d]`` attending to all of prefix ``index[i]`` and causally to themselves."""
        q, k, v = self._qkv(x)
        pk, pv = prefix_kv
        k = torch.cat([pk[index], k], dim=2)
        v = torch.cat([pv[index], v], dim=2)
        lp, ls = pk.shape[2], x.shape[1]
        allowed = torch.ones(ls, lp + ls, dtype=torch.bool, device=x.device).tril(diagonal=lp)
        return self._out(x, F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


@dataclass
class Rollout:
    """Sampled responses.

    Attributes:
        tokens: ``[n, R]`` int64 response tokens (``<pad>`` after ``<eos>``).
        mask: ``[n, R]`` bool, the response's tokens (``<eos>`` included).
        logprobs: ``[n, R]`` float32, log-prob of each sampled token under the sampling policy (0 where masked).
        lengths: ``[n]`` int64, number of response tokens.
        dist: ``[n, R, V]`` float32 log-probs of every token at every position (``keep_dist=True``; else
            ``None``); positions after every row has ended hold 0.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    dist: torch.Tensor | None = None


class TinyVLPolicy(nn.Module):
    def __init__(self, config: PolicyConfig = PolicyConfig()) -> None:
        super().__init__()
        d = config.d_model
        self.config = config
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.GELU(),  # 16x16
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),  # 8x8
            nn.Conv2d(64, d, 3, stride=2, padding=1),  # 4x4
        )
        self.embed = nn.Embedding(len(VOCAB), d)
        self.pos = nn.Parameter(torch.zeros(N_VISUAL + QUESTION_LEN + config.max_response, d))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(_Block(d, config.n_heads) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, len(VOCAB))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 32, 32]`` -> ``[B, 16, d]`` visual tokens."""
        return self.encoder(images).flatten(2).transpose(1, 2)

    def forward(self, visual: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits at every text position (one plain causal pass; the reference computation).

        Args:
            visual: ``[n, 16, d]`` visual tokens (from :meth:`encode`, indexed per row).
            tokens: ``[n, L]`` question tokens followed by response tokens (``L <= QUESTION_LEN + R``).

        Returns:
            ``[n, L, V]`` logits; position ``j`` predicts token ``j + 1``.
        """
        x = torch.cat([visual, self.embed(tokens)], dim=1)
        x = x + self.pos[: x.shape[1]]
        for block in self.blocks:
            x, _ = block(x)
        return self.head(self.ln_f(x[:, N_VISUAL:]))

    def prefix(self, visual: torch.Tensor, questions: torch.Tensor) -> tuple[list, torch.Tensor]:
        """Run the shared prefix ``[visual, question]`` once per prompt.

        Returns the per-layer keys/values and ``[P, V]`` logits of the first response token.
        """
        x = torch.cat([visual, self.embed(questions)], dim=1)
        x = x + self.pos[: x.shape[1]]
        cache = []
        for block in self.blocks:
            x, kv = block(x)
            cache.append(kv)
        return cache, self.head(self.ln_f(x[:, -1]))

    def suffix_logits(self, cache: list, index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``[n, Ls, V]`` next-token logits of response tokens ``tokens [n, Ls]`` after prefix ``index[i]``."""
        lp = cache[0][0].shape[2]
        x = self.embed(tokens) + self.pos[lp : lp + tokens.shape[1]]
        for block, kv in zip(self.blocks, cache):
            x = block.forward_suffix(x, kv, index)
        return self.head(self.ln_f(x))

    def response_logits(
        self, visual: torch.Tensor, questions: torch.Tensor, responses: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[n, R, V]`` logits of the response tokens (teacher forcing).

        ``visual [P, 16, d]`` and ``questions [P, Lq]`` hold one prefix per prompt; row ``i`` of
        ``responses [n, R]`` follows prefix ``index[i]`` (default: ``i``). The prefix is computed once per
        prompt, which is what makes a group of G responses cheap.
        """
        if index is None:
            index = torch.arange(responses.shape[0], device=responses.device)
        cache, first = self.prefix(visual, questions)
        rest = self.suffix_logits(cache, index, responses[:, :-1])
        return torch.cat([first[index].unsqueeze(1), rest], dim=1)

    @torch.no_grad()
    def sample(
        self,
        visual: torch.Tensor,
        questions: torch.Tensor,
        generator: torch.Generator | None,
        *,
        group_size: int = 1,
        greedy: bool = False,
        temperature: float = 1.0,
        keep_dist: bool = False,
    ) -> Rollout:
        """Sample (or greedily decode) ``group_size`` responses per prompt, at most ``max_response`` tokens.

        Rows are prompt-major: row ``i`` answers prompt ``i // group_size``. Stops at ``<eos>`` (and
        decoding stops once every row has). ``keep_dist`` keeps every position's log-probs.
        """
        cache, first = self.prefix(visual, questions)
        n = questions.shape[0] * group_size
        dev = questions.device
        index = torch.arange(n, device=dev) // group_size
        r = self.config.max_response
        tokens = torch.full((n, r), PAD, dtype=torch.long, device=dev)
        logprobs = torch.zeros(n, r, device=dev)
        mask = torch.zeros(n, r, dtype=torch.bool, device=dev)
        alive = torch.ones(n, dtype=torch.bool, device=dev)
        dist = torch.zeros(n, r, len(VOCAB), device=dev) if keep_dist else None
        for j in range(r):
            if not bool(alive.any()):
                break
            logits = first[index] if j == 0 else self.suffix_logits(cache, index, tokens[:, :j])[:, -1]
            logits = logits.float()
            logp = torch.log_softmax(logits / temperature, dim=-1)
            if dist is not None:
                dist[:, j] = logp
            if greedy:
                nxt = logp.argmax(-1)
            else:
                nxt = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            nxt = torch.where(alive, nxt, torch.full_like(nxt, PAD))
            tokens[:, j] = nxt
            logprobs[:, j] = torch.where(alive, logp.gather(1, nxt.unsqueeze(1)).squeeze(1), 0.0)
            mask[:, j] = alive
            alive = alive & (nxt != EOS)
        return Rollout(tokens, mask, logprobs, mask.sum(1), dist)
