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

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from cmmd.config import ConfigError
from cmmd.diffusion.denoiser import JointModel
from cmmd.diffusion.parameterization import prediction_target, q_sample
from cmmd.diffusion.schedules import Schedule, append_dims


@dataclass
class DiffusionLossConfig:
    """The training objective (METHOD.md sections 3-4).

    * ``prediction``: network output kind, ``"v"`` (ours, paper Eq. 2) or ``"eps"`` (the
      MM-Diffusion baseline, with the linear schedule).
    * ``video_weight`` / ``audio_weight``: weights of the two per-element-mean MSE terms.
    * ``contrastive``: ``"none"`` (nCMMD, plain Eq. 2), ``"paper"`` (Eq. 6 as written, unbounded
      below) or ``"bounded"`` (InfoNCE over per-sample diffusion losses, see
      :func:`contrastive_bound`).
    * ``eta``: weight of the contrastive term (Eq. 6's eta; also the weight of the bounded term).
      The paper form is unbounded, so keep it small (1e-4 scale); the bounded term cannot run
      away and tolerates a larger weight.
    * ``temperature``: scale of the bounded variant's logits ``-loss / temperature``. Positive
      and negative per-element losses typically differ by 1e-3..1e-2, so 0.01 puts the logits
      at O(1); a starting point to measure from, not a tuned value.
    * ``negative_terms``: which outputs of a negative pair enter its loss, ``"joint"`` (both, the
      literal Eq. 6), ``"own"`` (the negative modality's output only, CDCD's ``L_cdiff``,
      Eq. 4) or ``"cross"`` (the partner modality's output only); see :func:`contrastive_loss`.
    * ``clean_condition_prob``: our extension, not in the paper (0 = the paper's training). With
      this probability a sample gives one modality (video or audio, equally likely) to the
      network clean, at level 0, and drops that modality's loss term, so the joint model also
      learns the conditionals ``p(a | v)`` and ``p(v | a)`` directly (as UniDiffuser does with
      independent levels). Sampling then conditions with ``Condition(known_level="clean")``.
    """

    prediction: Literal["v", "eps"] = "v"
    video_weight: float = 1.0
    audio_weight: float = 1.0
    contrastive: Literal["none", "paper", "bounded"] = "none"
    eta: float = 1e-4
    temperature: float = 0.01
    negative_terms: Literal["joint", "own", "cross"] = "joint"
    clean_condition_prob: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.clean_condition_prob <= 1:
            raise ConfigError(f"clean_condition_prob must be in [0, 1], got {self.clean_condition_prob}")
        if self.video_weight < 0 or self.audio_weight < 0:
            raise ConfigError("video_weight and audio_weight must be >= 0")
        if self.eta < 0:
            raise ConfigError(f"eta must be >= 0 (0 gives nCMMD), got {self.eta}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")


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


def _modality_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over all non-batch elements (R,), in float32 or wider."""
    dtype = torch.promote_types(torch.promote_types(out.dtype, target.dtype), torch.float32)
    return (out.to(dtype) - target.to(dtype)).pow(2).flatten(1).mean(dim=1)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass; per-sample MSE of the video output and of the audio output, each (R,).

    Both modalities are noised to the same level ``t`` (METHOD.md section 3) and the network
    gets ``t`` as float step indices for both streams (the model contract). Rows flagged in
    ``clean_video`` / ``clean_audio`` (R,) bool instead give that modality clean at level 0 as a
    condition, and its error is zeroed (``DiffusionLossConfig.clean_condition_prob``).
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
    return err_v, err_a


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
                                  clean_video, clean_audio)
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Joint contrastive loss (paper Eq. 6, or its bounded variant), a scalar plus logs.

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

    Logs (detached): ``loss``, ``loss_diffusion`` (positive mean), ``loss_video``, ``loss_audio``
    (positive per-modality MSE), ``contrast`` (the added term), and per negative kind present
    ``neg_{audio,video}_loss`` (mean selected term) and ``neg_{audio,video}_gap`` (mean of negative
    minus its positive's same term: > 0 means the model tells them apart).
    """
    if cfg.contrastive not in ("paper", "bounded"):
        raise ValueError(f"contrastive_loss needs contrastive 'paper' or 'bounded', got {cfg.contrastive!r}")
    owner_a = _owners(video_for_audio, video0, audio_index)
    owner_v = _owners(audio_for_video, audio0, video_index)
    B, Ka = video0.shape[0], audio_negatives.shape[0]
    rows = torch.cat([torch.arange(B, device=owner_a.device), owner_a, owner_v])
    video_rows = torch.cat([video0, video0[owner_a], video_negatives.to(video0.dtype)])
    audio_rows = torch.cat([audio0, audio_negatives.to(audio0.dtype), audio0[owner_v]])
    t_rows = t.to(rows.device)[rows]
    raw_v, raw_a = _output_errors(
        model, video_rows, audio_rows, t_rows, noise_video[rows], noise_audio[rows], schedule, cfg.prediction,
        None if clean_video is None else clean_video[rows], None if clean_audio is None else clean_audio[rows],
    )
    err_v, err_a = cfg.video_weight * raw_v, cfg.audio_weight * raw_a
    positive = err_v[:B] + err_a[:B]

    # (term of each negative row, the same term of the positive rows) per negative kind.
    sl_a, sl_v = slice(B, B + Ka), slice(B + Ka, None)
    terms = {
        "joint": {"audio": (err_v[sl_a] + err_a[sl_a], positive), "video": (err_v[sl_v] + err_a[sl_v], positive)},
        "own": {"audio": (err_a[sl_a], err_a[:B]), "video": (err_v[sl_v], err_v[:B])},
        "cross": {"audio": (err_v[sl_a], err_v[:B]), "video": (err_a[sl_v], err_a[:B])},
    }[cfg.negative_terms]

    contrast = positive.new_zeros(())
    logs: dict[str, torch.Tensor] = {}
    for kind, owner in (("audio", owner_a), ("video", owner_v)):
        if owner.numel() == 0:
            continue
        negative, positive_same = terms[kind]
        if cfg.contrastive == "paper":
            contrast = contrast - cfg.eta * negative.mean()
        else:
            has_negative = torch.bincount(owner, minlength=B) > 0
            bound = contrastive_bound(positive_same, negative, owner, cfg.temperature)
            contrast = contrast + cfg.eta * bound[has_negative].mean()
        logs[f"neg_{kind}_loss"] = negative.detach().mean()
        logs[f"neg_{kind}_gap"] = (negative - positive_same[owner]).detach().mean()

    loss = positive.mean() + contrast
    logs.update(
        loss=loss.detach(),
        loss_diffusion=positive.detach().mean(),
        loss_video=raw_v[:B].detach().mean(),
        loss_audio=raw_a[:B].detach().mean(),
        contrast=contrast.detach(),
    )
    return loss, logs


def training_loss(
    model: JointModel,
    video: torch.Tensor,
    audio: torch.Tensor,
    negatives: NegativeBatch | None,
    schedule: Schedule,
    cfg: DiffusionLossConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training objective evaluation: scalar loss to back-propagate, and detached logs.

    ``video`` (B, T, C, H, W) and ``audio`` (B, M, L) are the clean (normalised) data. Draws, in
    this order and on the generator's device, ``t`` (B,) uniform integers in ``[0, N)``, then the
    video noise, then the audio noise, so a step is a pure function of the generator's seed.
    With ``cfg.contrastive == "none"`` this is the mean of :func:`joint_diffusion_loss` and
    ``negatives`` is ignored; otherwise :func:`contrastive_loss` with ``negatives`` (required).
    Log keys are those of :func:`contrastive_loss` (without the negative ones for ``"none"``).
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
        per_sample, parts = joint_diffusion_loss(model, video, audio, t, noise_video, noise_audio, schedule, cfg,
                                                 clean_video, clean_audio)
        loss = per_sample.mean()
        logs = {
            "loss": loss.detach(),
            "loss_diffusion": loss.detach(),
            "loss_video": parts["video"].detach().mean(),
            "loss_audio": parts["audio"].detach().mean(),
        }
        return loss, logs
    if negatives is None:
        raise ValueError(f"contrastive={cfg.contrastive!r} needs negatives; got None")
    return contrastive_loss(
        model, video, audio,
        negatives.audio, negatives.video_for_audio, negatives.video, negatives.audio_for_video,
        t, noise_video, noise_audio, schedule, cfg, negatives.audio_index, negatives.video_index,
        clean_video, clean_audio,
    )
