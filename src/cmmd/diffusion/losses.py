"""Training objectives: the joint diffusion loss (paper Eq. 2) and the joint contrastive loss (Eq. 6).

Entry point for the training loop: :func:`training_loss`, which draws the step indices and the
noise from a generator and returns a scalar to back-propagate plus detached logs.

Loss scale (METHOD.md section 3, Decision): each output's squared error is averaged over the
elements of its modality, per sample, and the two modality means are summed with weights
``video_weight`` / ``audio_weight``; so a per-sample joint loss is
``w_v * mean_v (target_v - out_v)^2 + w_a * mean_a (target_a - out_a)^2``.
Errors are accumulated in float32 even when the network runs under bf16/fp16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F

from cmmd.config import ConfigError
from cmmd.diffusion.denoiser import JointModel
from cmmd.diffusion.parameterization import prediction_target, q_sample, x0_from_prediction
from cmmd.diffusion.schedules import Schedule, append_dims
from cmmd.diffusion.sync_losses import sync_loss


@dataclass
class DiffusionLossConfig:
    """The training objective (METHOD.md sections 3-4, and our additions beyond the paper).

    * ``prediction``: network output kind, ``"v"`` (ours, paper Eq. 2) or ``"eps"`` (the
      MM-Diffusion baseline, with the linear schedule).
    * ``video_weight`` / ``audio_weight``: weights of the two per-element-mean MSE terms.
    * ``contrastive``: the term built on negatives (see :func:`contrastive_loss`): ``"none"``
      (nCMMD, plain Eq. 2), ``"paper"`` (Eq. 6 as written, unbounded below), ``"bounded"``
      (InfoNCE over per-sample diffusion losses with one negative, :func:`contrastive_bound`),
      ``"infonce"`` (the same over ``num_negatives`` >= 2 negatives per sample) or ``"dpo"``
      (Diffusion-DPO against the negatives as dispreferred pairs, :func:`dpo_loss`; needs a
      frozen reference model, ``init`` in the training config).
    * ``num_negatives``: negatives of each modality drawn per sample per step (K; the training
      loop draws ``negatives`` K times). 1 for ``"bounded"``, >= 2 for ``"infonce"``; any K for
      ``"paper"`` and ``"dpo"`` (means over more negatives). Unset (``None``): 4 for
      ``"infonce"``, else 1.
    * ``eta``: weight of the contrastive term (Eq. 6's eta; also of the bounded, InfoNCE and DPO
      terms). The paper form is unbounded, so keep it small (1e-4 scale); the others cannot run
      away and tolerate a larger weight.
    * ``temperature``: scale of the bounded/InfoNCE logits ``-loss / temperature``. Positive
      and negative per-element losses typically differ by 1e-3..1e-2, so 0.01 puts the logits
      at O(1); a starting point to measure from, not a tuned value.
    * ``dpo_beta``: Diffusion-DPO's beta; the logit is ``-dpo_beta * N * margin`` with N the
      training steps (Wallace et al. 2023 write ``beta T``). Their SD runs use a product in the
      low thousands on per-element-mean MSEs, as ours are; 2.5 x 1000 = 2500 is in that range,
      a starting point to measure from, not a tuned value.
    * ``negative_terms``: which outputs of a negative pair enter its loss, ``"joint"`` (both, the
      literal Eq. 6), ``"own"`` (the negative modality's output only, CDCD's ``L_cdiff``,
      Eq. 4) or ``"cross"`` (the partner modality's output only); see :func:`contrastive_loss`.
    * ``sync_weight``: weight of the sync-discriminative term on the x0 predictions
      (:mod:`cmmd.diffusion.sync_losses`; 0 = off). It needs log-mel audio and no negatives,
      and adds to any ``contrastive`` form. ``sync_temperature`` scales its correlation logits
      (correlations lie in [-1, 1]); ``sync_shifts`` are the tested misalignments in mel frames,
      each in both directions (62.5 mel frames/s at the defaults: 48, 96, 192 and 400 ms).
    * ``clean_condition_prob``: our extension, not in the paper (0 = the paper's training). With
      this probability a sample gives one modality (video or audio, equally likely) to the
      network clean, at level 0, and drops that modality's loss term, so the joint model also
      learns the conditionals ``p(a | v)`` and ``p(v | a)`` directly (as UniDiffuser does with
      independent levels). Sampling then conditions with ``Condition(known_level="clean")``.
    """

    prediction: Literal["v", "eps"] = "v"
    video_weight: float = 1.0
    audio_weight: float = 1.0
    contrastive: Literal["none", "paper", "bounded", "infonce", "dpo"] = "none"
    num_negatives: int | None = None
    eta: float = 1e-4
    temperature: float = 0.01
    dpo_beta: float = 2.5
    negative_terms: Literal["joint", "own", "cross"] = "joint"
    sync_weight: float = 0.0
    sync_temperature: float = 0.1
    sync_shifts: tuple[int, ...] = (3, 6, 12, 25)
    clean_condition_prob: float = 0.0

    def __post_init__(self) -> None:
        self.sync_shifts = tuple(self.sync_shifts)
        if not 0 <= self.clean_condition_prob <= 1:
            raise ConfigError(f"clean_condition_prob must be in [0, 1], got {self.clean_condition_prob}")
        if self.video_weight < 0 or self.audio_weight < 0:
            raise ConfigError("video_weight and audio_weight must be >= 0")
        if self.eta < 0:
            raise ConfigError(f"eta must be >= 0 (0 gives nCMMD), got {self.eta}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.num_negatives is None:
            self.num_negatives = 4 if self.contrastive == "infonce" else 1
        if self.num_negatives < 1:
            raise ConfigError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if self.contrastive == "infonce" and self.num_negatives < 2:
            raise ConfigError(f"num_negatives must be >= 2 for contrastive infonce (one negative is contrastive "
                              f"bounded), got {self.num_negatives}")
        if self.contrastive == "bounded" and self.num_negatives != 1:
            raise ConfigError(f"num_negatives must be 1 for contrastive bounded (several negatives: contrastive "
                              f"infonce), got {self.num_negatives}")
        if self.dpo_beta <= 0:
            raise ConfigError(f"dpo_beta must be > 0, got {self.dpo_beta}")
        if self.sync_weight < 0:
            raise ConfigError(f"sync_weight must be >= 0 (0 = off), got {self.sync_weight}")
        if self.sync_temperature <= 0:
            raise ConfigError(f"sync_temperature must be > 0, got {self.sync_temperature}")
        if not self.sync_shifts or any(k < 1 for k in self.sync_shifts) or len(set(self.sync_shifts)) != len(
                self.sync_shifts):
            raise ConfigError(f"sync_shifts must be distinct positive mel-frame counts, got {list(self.sync_shifts)}")


class NegativeBatch(Protocol):
    """What :func:`training_loss` reads from ``cmmd.data.negatives.Negatives``.

    ``audio`` (Ka, M, L) negative audio, each paired with ``video_for_audio`` (Ka, T, C, H, W),
    the positive video of batch row ``audio_index`` (Ka,); ``video`` (Kv, T, C, H, W) negative
    video, each paired with ``audio_for_video`` (Kv, M, L) of row ``video_index`` (Kv,).
    """

    audio: torch.Tensor
    video_for_audio: torch.Tensor
    audio_index: torch.Tensor
    video: torch.Tensor
    audio_for_video: torch.Tensor
    video_index: torch.Tensor


@dataclass
class NegativeSet:
    """Several draws of negatives as one :class:`NegativeBatch` (fields as there)."""

    audio: torch.Tensor
    video_for_audio: torch.Tensor
    audio_index: torch.Tensor
    video: torch.Tensor
    audio_for_video: torch.Tensor
    video_index: torch.Tensor


def concat_negatives(draws: Sequence[NegativeBatch]) -> NegativeSet:
    """The negatives of all ``draws`` together: K draws of one negative per sample give each
    sample K negatives of each modality (``DiffusionLossConfig.num_negatives``)."""
    if not draws:
        raise ValueError("concat_negatives needs at least one draw")
    fields = ("audio", "video_for_audio", "audio_index", "video", "audio_for_video", "video_index")
    return NegativeSet(**{f: torch.cat([getattr(d, f) for d in draws]) for f in fields})


def _modality_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over all non-batch elements (R,), in float32 or wider."""
    dtype = torch.promote_types(torch.promote_types(out.dtype, target.dtype), torch.float32)
    return (out.to(dtype) - target.to(dtype)).pow(2).flatten(1).mean(dim=1)


class _Pass(NamedTuple):
    """One forward pass over R rows: per-row MSEs (R,), the inputs' signal fractions ``ab`` (R,)
    and, when asked for, the clean-signal predictions (float32, shaped like the data)."""

    err_v: torch.Tensor
    err_a: torch.Tensor
    ab_v: torch.Tensor
    ab_a: torch.Tensor
    x0_v: torch.Tensor | None = None
    x0_a: torch.Tensor | None = None


def _output_errors(
    model: JointModel,
    video0: torch.Tensor,
    audio0: torch.Tensor,
    t: torch.Tensor,
    noise_video: torch.Tensor,
    noise_audio: torch.Tensor,
    schedule: Schedule,
    prediction: str,
    clean_video: torch.Tensor | None = None,
    clean_audio: torch.Tensor | None = None,
    want_x0: bool = False,
) -> _Pass:
    """One forward pass; per-sample MSE of the video output and of the audio output, each (R,).

    Both modalities are noised to the same level ``t`` (METHOD.md section 3) and the network
    gets ``t`` as float step indices for both streams (the model contract). Rows flagged in
    ``clean_video`` / ``clean_audio`` (R,) bool instead give that modality clean at level 0 as a
    condition, and its error is zeroed (``DiffusionLossConfig.clean_condition_prob``).
    ``want_x0`` also returns the x0 predictions the outputs imply (for the sync term).
    """
    t = t.to(video0.device)
    n = t.to(torch.float32)
    n_v, n_a = n, n
    if clean_video is not None:
        n_v = torch.where(clean_video, torch.zeros_like(n), n)
    if clean_audio is not None:
        n_a = torch.where(clean_audio, torch.zeros_like(n), n)
    ab_v, ab_a = schedule.alpha_bar_at(n_v), schedule.alpha_bar_at(n_a)
    video_n = q_sample(video0, noise_video, ab_v)  # Eq. 5
    audio_n = q_sample(audio0, noise_audio, ab_a)
    if clean_video is not None:
        video_n = torch.where(append_dims(clean_video, video0.ndim), video0, video_n)
    if clean_audio is not None:
        audio_n = torch.where(append_dims(clean_audio, audio0.ndim), audio0, audio_n)
    out_v, out_a = model(video_n, audio_n, n_v, n_a)
    target_v = prediction_target(prediction, video0, noise_video, ab_v)  # Eq. 2
    target_a = prediction_target(prediction, audio0, noise_audio, ab_a)
    err_v, err_a = _modality_mse(out_v, target_v), _modality_mse(out_a, target_a)
    if clean_video is not None:
        err_v = err_v * (~clean_video).to(err_v.dtype)
    if clean_audio is not None:
        err_a = err_a * (~clean_audio).to(err_a.dtype)
    if not want_x0:
        return _Pass(err_v, err_a, ab_v, ab_a)
    x0_v = x0_from_prediction(prediction, video_n.float(), out_v.float(), ab_v)  # type: ignore[arg-type]
    x0_a = x0_from_prediction(prediction, audio_n.float(), out_a.float(), ab_a)  # type: ignore[arg-type]
    return _Pass(err_v, err_a, ab_v, ab_a, x0_v, x0_a)


def joint_diffusion_loss(
    model: JointModel,
    video0: torch.Tensor,
    audio0: torch.Tensor,
    t: torch.Tensor,
    noise_video: torch.Tensor,
    noise_audio: torch.Tensor,
    schedule: Schedule,
    cfg: DiffusionLossConfig,
    clean_video: torch.Tensor | None = None,
    clean_audio: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample joint diffusion loss ``L_jdiff`` (paper Eq. 2), with its two components.

    ``video0`` (B, T, C, H, W), ``audio0`` (B, M, L), ``t`` (B,) integer steps in ``[0, N)``,
    noises shaped like the data. Returns ``(loss (B,), {"video": (B,), "audio": (B,)})`` where the
    components are the unweighted per-element-mean MSEs and
    ``loss = video_weight * video + audio_weight * audio``.
    """
    video, audio = _output_errors(model, video0, audio0, t, noise_video, noise_audio, schedule, cfg.prediction,
                                  clean_video, clean_audio)[:2]
    return cfg.video_weight * video + cfg.audio_weight * audio, {"video": video, "audio": audio}


def match_negatives(partners: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Index (K,) of the positive row that each partner row (K, ...) is an exact copy of.

    How a negative finds its positive (to share its step and noise, and to be compared with it
    in the bounded loss) when no index is given, without any layout convention on the
    negatives: subsets, several negatives per positive and any order all work. Raises
    ValueError for a partner that is not a row of the batch. Duplicated positives resolve to
    the first copy.
    """
    if partners.shape[1:] != positives.shape[1:]:
        raise ValueError(
            f"negative partners have shape {tuple(partners.shape[1:])} per item, the batch "
            f"{tuple(positives.shape[1:])}"
        )
    flat_partners = partners.flatten(1)
    flat_positives = positives.flatten(1).to(partners.dtype)
    owner = torch.full((partners.shape[0],), -1, dtype=torch.long, device=partners.device)
    for b in range(positives.shape[0]):
        hit = (flat_partners == flat_positives[b]).all(dim=1) & (owner < 0)
        owner[hit] = b
    if bool((owner < 0).any()):
        raise ValueError("a negative's partner is not an exact copy of any item of the positive batch")
    return owner


def _owners(partners: torch.Tensor, positives: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """The positive row of each negative: ``index`` checked against the partners, or matched."""
    if index is None:
        return match_negatives(partners, positives)
    index = index.to(device=positives.device, dtype=torch.long)
    if partners.shape != index.shape + positives.shape[1:] or not torch.equal(partners, positives[index]):
        raise ValueError("negative partners are not the positive batch rows that their index names")
    return index


def contrastive_bound(
    positive_loss: torch.Tensor, negative_loss: torch.Tensor, owner: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Bounded contrast per positive (B,): ``log(1 + sum_{j: owner_j = b} exp((L_b - L_j) / tau))``.

    This is CDCD's bound (paper Eq. 4, first line) with ``exp(-L / tau)`` standing in for the
    likelihood ratios, since a diffusion loss is, up to scale and constants, a bound on
    ``-log p``: equivalently ``-log softmax`` of the positive among itself and its negatives with
    logits ``-loss / tau`` (InfoNCE, van den Oord et al. 2018); with one negative it is the
    log-sigmoid ``-log sigmoid((L_j - L_b) / tau)``. It is >= 0, decreases as the negatives'
    losses grow, and saturates once they exceed the positive's by a few ``tau``, so unlike
    Eq. 6 as written the model gains nothing from making negatives arbitrarily bad.
    ``positive_loss`` (B,), ``negative_loss`` (K,), ``owner`` (K,) the positive of each negative;
    a positive without negatives gets 0.
    """
    d = (positive_loss[owner] - negative_loss) / temperature
    # Per-positive max(0, max_j d_j) for a stable log-sum-exp; the value does not depend on it.
    m = torch.zeros_like(positive_loss).scatter_reduce(0, owner, d.detach(), reduce="amax", include_self=True)
    total = torch.exp(-m).scatter_add(0, owner, torch.exp(d - m[owner]))
    return m + torch.log(total)


def dpo_loss(
    win: torch.Tensor, win_ref: torch.Tensor, lose: torch.Tensor, lose_ref: torch.Tensor, beta_n: float
) -> torch.Tensor:
    """Diffusion-DPO per pair (K,): ``-log sigmoid(-beta_n * ((L_w - L_w_ref) - (L_l - L_l_ref)))``.

    Wallace et al. 2023 ("Diffusion Model Alignment Using Direct Preference Optimization"),
    with ``beta_n = beta T``: ``L`` are per-sample denoising losses of the model and ``L_ref`` of a
    frozen reference (the initial model) on the preferred pair ``w`` (aligned audio and video)
    and the dispreferred ``l`` (a temporally distorted pair, as SyncDPO uses them for sync), at
    the same step and noise. A diffusion loss bounds ``-log p``, so ``L_ref - L`` estimates how
    much more likely the model makes a pair than the reference does, and the loss asks for that
    gain to be larger on the aligned pair than on the distorted one. Unlike Eq. 6 it is bounded
    below by 0 and saturates once the aligned pair's gain exceeds the distorted pair's by a few
    ``1 / beta_n``, and it is measured
    against the reference (DPO's implicit KL anchor), so ruining the denoising of distorted
    pairs earns little. Equal to ``log 2`` where model and reference agree.
    """
    margin = (win - win_ref) - (lose - lose_ref)
    return -F.logsigmoid(-beta_n * margin)


def _sync_term(
    video0: torch.Tensor,
    audio0: torch.Tensor,
    positive: _Pass,
    cfg: DiffusionLossConfig,
    clean_video: torch.Tensor | None,
    clean_audio: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``sync_weight * mean_b (w_a(b) S_a(b) + w_v(b) S_v(b))`` over the B positive rows, and logs.

    ``S_a``, ``S_v``: :func:`cmmd.diffusion.sync_losses.sync_loss` of the predicted audio and the
    predicted video. A prediction is scored against its partner's ground truth only as far as
    the network saw that partner: ``w_a = ab_v`` (the signal fraction of the video input; about 1
    where the video was given clean as the condition), ``w_v = ab_a``; a modality given clean is
    a condition, not a prediction, and gets weight 0. At pure noise the network has no timing
    to follow and the term vanishes there.
    """
    assert positive.x0_v is not None and positive.x0_a is not None
    B = video0.shape[0]
    s_audio, s_video = sync_loss(video0, audio0, positive.x0_v[:B], positive.x0_a[:B], cfg.sync_shifts,
                                 cfg.sync_temperature)
    w_audio, w_video = positive.ab_v[:B].to(s_audio.dtype), positive.ab_a[:B].to(s_video.dtype)
    if clean_audio is not None:
        w_audio = w_audio * (~clean_audio[:B]).to(w_audio.dtype)
    if clean_video is not None:
        w_video = w_video * (~clean_video[:B]).to(w_video.dtype)
    term = cfg.sync_weight * (w_audio * s_audio + w_video * s_video).mean()
    return term, {"sync": term.detach(), "sync_audio": s_audio.detach().mean(), "sync_video": s_video.detach().mean()}


def contrastive_loss(
    model: JointModel,
    video0: torch.Tensor,
    audio0: torch.Tensor,
    audio_negatives: torch.Tensor,
    video_for_audio: torch.Tensor,
    video_negatives: torch.Tensor,
    audio_for_video: torch.Tensor,
    t: torch.Tensor,
    noise_video: torch.Tensor,
    noise_audio: torch.Tensor,
    schedule: Schedule,
    cfg: DiffusionLossConfig,
    audio_index: torch.Tensor | None = None,
    video_index: torch.Tensor | None = None,
    clean_video: torch.Tensor | None = None,
    clean_audio: torch.Tensor | None = None,
    reference: JointModel | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Joint contrastive loss (paper Eq. 6, its bounded/InfoNCE variants or DPO), a scalar plus logs.

    Positives ``video0`` (B, T, C, H, W) / ``audio0`` (B, M, L) with steps ``t`` (B,) and
    noises; ``audio_negatives`` (Ka, M, L) paired with ``video_for_audio`` (Ka, T, C, H, W) and
    ``video_negatives`` (Kv, T, C, H, W) paired with ``audio_for_video`` (Kv, M, L); either set
    may be empty. Each partner row must be a copy of a positive: of row ``audio_index[j]`` /
    ``video_index[k]`` when given (checked), else found by :func:`match_negatives`.

    *Shared step and noise.* A negative is noised with its positive's ``t`` and both of its
    noises, so an audio negative ``(a-, v)`` sees exactly the positive's ``v_n`` and
    ``a-_n = sqrt(ab) a- + sqrt(1 - ab) eps_a`` with the positive's ``eps_a``. The contrast
    between positive and negative then measures the change of input, not a different noise draw
    (a variance reduction; the expectation over ``t`` and noise in Eq. 6 is unchanged). All rows
    go through the network in one forward pass over ``[positives, audio negatives, video
    negatives]`` (batch B + Ka + Kv), which also keeps DDP to one forward per backward.

    *Which outputs enter a negative's loss* (``cfg.negative_terms``). For an audio negative
    ``(a-, v)`` the joint model produces two errors:

    * ``own``: the audio output against ``a-``'s own target, i.e. how well the model denoises
      the negative audio given the video. This is CDCD's ``L_cdiff(a-, v)`` (Eq. 4).
    * ``cross``: the video output against the true video's target. Its target and its noisy
      input ``v_n`` are the positive's exactly, so its difference to the positive's video term
      comes from the audio input alone: how much the video prediction relies on matching audio.
    * ``joint`` (default) = ``own + cross`` with the modality weights: ``L_jdiff(a-, v)``
      exactly as Eq. 6 writes it (METHOD.md section 4 asks for the paper's form).

    Video negatives likewise with the roles swapped. With the paper form, the ``own`` term
    rewards the model for denoising the negative signal itself worse: the negative is a real
    (shifted, spliced or swapped) clip, so the cheapest way down is to spot augmentation traces
    (padding, splice points) and degrade that prediction, which uses no cross-modal information
    and is unbounded below. The ``cross`` term cannot be lowered by denoising any signal worse
    in general, since its target is shared with the positive (the audio-blind part of the
    network is trained with weight ``1 - eta``), but is also unbounded (sabotage on detecting a
    mismatch). Hence a small ``eta``, or ``contrastive="bounded"``. Which choice aligns better is
    measured, not assumed.

    *Forms.* ``"paper"``: ``mean_b L_jdiff(a_b, v_b) - eta * mean_j L(a-_j, v) - eta * mean_k
    L(a, v-_k)`` (Eq. 6, expectations as means over the drawn negatives). ``"bounded"``:
    ``mean_b L_jdiff(a_b, v_b) + eta * (mean_b C_a(b) + mean_b C_v(b))`` where ``C`` is
    :func:`contrastive_bound` comparing each negative's selected term with the same term of its
    positive (the whole ``L_jdiff`` for ``joint``), averaged over positives that have negatives.
    ``"infonce"``: the same with K >= 2 negatives per positive (``-log softmax`` of the positive
    among itself and its K negatives, van den Oord et al. 2018): more negatives tighten the bound
    on the mutual information and let each step contrast against several misalignments at once,
    at K network rows per sample and modality. ``"dpo"``: ``mean_b L_jdiff(a_b, v_b) + eta *
    (mean_j D_a(j) + mean_k D_v(k))`` with ``D`` :func:`dpo_loss` of each (positive, negative)
    pair, the selected term of the model and of the frozen ``reference`` (same rows, same step
    and noise, no gradient). The positive term stays as an anchor (as in RPO, Pang et al. 2024),
    so ``eta`` sets how far preference outweighs plain denoising.

    With ``cfg.sync_weight > 0`` the sync term of :func:`_sync_term` on the positive rows is
    added (logs ``sync``, ``sync_audio``, ``sync_video``).

    Logs (detached): ``loss``, ``loss_diffusion`` (positive mean), ``loss_video``, ``loss_audio``
    (positive per-modality MSE), ``contrast`` (the added term), and per negative kind present
    ``neg_{audio,video}_loss`` (mean selected term) and ``neg_{audio,video}_gap`` (mean of negative
    minus its positive's same term: > 0 means the model tells them apart).
    """
    if cfg.contrastive not in ("paper", "bounded", "infonce", "dpo"):
        raise ValueError(f"contrastive_loss needs contrastive 'paper', 'bounded', 'infonce' or 'dpo', "
                         f"got {cfg.contrastive!r}")
    if cfg.contrastive == "dpo" and reference is None:
        raise ValueError("contrastive 'dpo' needs a frozen reference model")
    owner_a = _owners(video_for_audio, video0, audio_index)
    owner_v = _owners(audio_for_video, audio0, video_index)
    B, Ka = video0.shape[0], audio_negatives.shape[0]
    rows = torch.cat([torch.arange(B, device=owner_a.device), owner_a, owner_v])
    video_rows = torch.cat([video0, video0[owner_a], video_negatives.to(video0.dtype)])
    audio_rows = torch.cat([audio0, audio_negatives.to(audio0.dtype), audio0[owner_v]])
    t_rows = t.to(rows.device)[rows]
    inputs = (video_rows, audio_rows, t_rows, noise_video[rows], noise_audio[rows], schedule, cfg.prediction,
              None if clean_video is None else clean_video[rows], None if clean_audio is None else clean_audio[rows])
    result = _output_errors(model, *inputs, want_x0=cfg.sync_weight > 0)
    positive, terms = _pair_terms(result, B, Ka, cfg)
    if cfg.contrastive == "dpo":
        assert reference is not None
        with torch.no_grad():
            ref_terms = _pair_terms(_output_errors(reference, *inputs), B, Ka, cfg)[1]

    contrast = positive.new_zeros(())
    logs: dict[str, torch.Tensor] = {}
    for kind, owner in (("audio", owner_a), ("video", owner_v)):
        if owner.numel() == 0:
            continue
        negative, positive_same = terms[kind]
        if cfg.contrastive == "paper":
            contrast = contrast - cfg.eta * negative.mean()
        elif cfg.contrastive == "dpo":
            negative_ref, positive_ref = ref_terms[kind]
            margin = (positive_same[owner] - positive_ref[owner]) - (negative - negative_ref)
            contrast = contrast + cfg.eta * dpo_loss(positive_same[owner], positive_ref[owner], negative, negative_ref,
                                                     cfg.dpo_beta * schedule.num_steps).mean()
            logs[f"dpo_{kind}_margin"] = margin.detach().mean()
        else:
            has_negative = torch.bincount(owner, minlength=B) > 0
            bound = contrastive_bound(positive_same, negative, owner, cfg.temperature)
            contrast = contrast + cfg.eta * bound[has_negative].mean()
        logs[f"neg_{kind}_loss"] = negative.detach().mean()
        logs[f"neg_{kind}_gap"] = (negative - positive_same[owner]).detach().mean()

    loss = positive.mean() + contrast
    if cfg.sync_weight > 0:
        sync, sync_logs = _sync_term(video0, audio0, result, cfg, clean_video, clean_audio)
        loss = loss + sync
        logs.update(sync_logs)
    logs.update(
        loss=loss.detach(),
        loss_diffusion=positive.detach().mean(),
        loss_video=result.err_v[:B].detach().mean(),
        loss_audio=result.err_a[:B].detach().mean(),
        contrast=contrast.detach(),
    )
    return loss, logs


def _pair_terms(
    result: _Pass, B: int, Ka: int, cfg: DiffusionLossConfig
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The positives' joint loss (B,) and, per negative kind, (the selected term of each negative
    row, the same term of the B positive rows) (``cfg.negative_terms``, :func:`contrastive_loss`)."""
    err_v, err_a = cfg.video_weight * result.err_v, cfg.audio_weight * result.err_a
    positive = err_v[:B] + err_a[:B]
    sl_a, sl_v = slice(B, B + Ka), slice(B + Ka, None)
    terms = {
        "joint": {"audio": (err_v[sl_a] + err_a[sl_a], positive), "video": (err_v[sl_v] + err_a[sl_v], positive)},
        "own": {"audio": (err_a[sl_a], err_a[:B]), "video": (err_v[sl_v], err_v[:B])},
        "cross": {"audio": (err_v[sl_a], err_v[:B]), "video": (err_a[sl_v], err_a[:B])},
    }[cfg.negative_terms]
    return positive, terms


def training_loss(
    model: JointModel,
    video: torch.Tensor,
    audio: torch.Tensor,
    negatives: NegativeBatch | None,
    schedule: Schedule,
    cfg: DiffusionLossConfig,
    generator: torch.Generator,
    reference: JointModel | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training objective evaluation: scalar loss to back-propagate, and detached logs.

    ``video`` (B, T, C, H, W) and ``audio`` (B, M, L) are the clean (normalised) data. Draws, in
    this order and on the generator's device, ``t`` (B,) uniform integers in ``[0, N)``, then the
    video noise, then the audio noise, so a step is a pure function of the generator's seed.
    With ``cfg.contrastive == "none"`` this is the mean of :func:`joint_diffusion_loss` (plus the
    sync term when ``cfg.sync_weight > 0``) and ``negatives`` is ignored; otherwise
    :func:`contrastive_loss` with ``negatives`` (required) and, for ``"dpo"``, the frozen
    ``reference``. Log keys are those of :func:`contrastive_loss` (without the negative ones
    for ``"none"``).
    """
    dev = generator.device
    t = torch.randint(0, schedule.num_steps, (video.shape[0],), generator=generator, device=dev)
    noise_video = torch.randn(video.shape, generator=generator, device=dev, dtype=video.dtype).to(video.device)
    noise_audio = torch.randn(audio.shape, generator=generator, device=dev, dtype=audio.dtype).to(audio.device)
    t = t.to(video.device)
    clean_video = clean_audio = None
    if cfg.clean_condition_prob > 0:  # our extension; drawn after the noise so p = 0 keeps the paper's stream
        u = torch.rand(video.shape[0], generator=generator, device=dev).to(video.device)
        clean_video = u < cfg.clean_condition_prob / 2
        clean_audio = (u >= cfg.clean_condition_prob / 2) & (u < cfg.clean_condition_prob)
    if cfg.contrastive == "none":
        result = _output_errors(model, video, audio, t, noise_video, noise_audio, schedule, cfg.prediction,
                                clean_video, clean_audio, want_x0=cfg.sync_weight > 0)
        loss = (cfg.video_weight * result.err_v + cfg.audio_weight * result.err_a).mean()
        logs = {
            "loss_diffusion": loss.detach(),
            "loss_video": result.err_v.detach().mean(),
            "loss_audio": result.err_a.detach().mean(),
        }
        if cfg.sync_weight > 0:
            sync, sync_logs = _sync_term(video, audio, result, cfg, clean_video, clean_audio)
            loss = loss + sync
            logs.update(sync_logs)
        return loss, {"loss": loss.detach(), **logs}
    if negatives is None:
        raise ValueError(f"contrastive={cfg.contrastive!r} needs negatives; got None")
    return contrastive_loss(
        model, video, audio,
        negatives.audio, negatives.video_for_audio, negatives.video, negatives.audio_for_video,
        t, noise_video, noise_audio, schedule, cfg, negatives.audio_index, negatives.video_index,
        clean_video, clean_audio, reference,
    )
