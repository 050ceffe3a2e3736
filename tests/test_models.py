"""The networks: shapes, causality of the prior, the quantizer's distances, restoration rules, SSIM."""

import torch
import torch.nn.functional as F

from edge_ad.config import load_config
from edge_ad.models.losses import continuous_bernoulli_nll
from edge_ad.models.prior import PixelSNAIL, code_nll
from edge_ad.models.quantizer import VectorQuantizer
from edge_ad.models.ssim import gaussian_1d, ssim_map
from edge_ad.models.vqvae import VQVAE
from edge_ad.scoring.restoration import bottom_half_any, replace_step, restore_fast, restore_sequential

CFG = load_config(None, ["data.size=[32, 32]", "data.temporal_offsets=[2]", "model.n_codes=16", "prior.channels=16"])


def test_vqvae_shapes_and_range() -> None:
    m = VQVAE.from_config(CFG).eval()
    x = torch.rand(2, 2, 32, 32)
    out = m(x)
    assert out["logits"].shape == x.shape
    assert out["codes"].shape == (2, 8, 8) and out["distance"].shape == (2, 8, 8)
    rec = m.decode_codes(out["codes"])
    assert rec.min() >= 0 and rec.max() <= 1


def test_quantizer_distance_is_distance_to_chosen_code() -> None:
    q = VectorQuantizer(4, 8).eval()
    z = torch.randn(1, 4, 3, 3)
    _, codes, dist, _ = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat, q.embed).pow(2)
    assert torch.equal(codes.flatten(), brute.argmin(1))
    assert torch.allclose(dist.flatten(), brute.min(1).values, atol=1e-5)


def test_quantizer_ema_pulls_codes_to_data_and_restarts_dead() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(2, 4, decay=0.5).train()
    data = torch.tensor([[5.0, 5.0], [-5.0, -5.0]]).repeat(32, 1).view(64, 2, 1, 1).permute(1, 0, 2, 3)
    z = data.reshape(1, 2, 8, 8)
    for _ in range(20):
        q(z)
    d = torch.cdist(torch.tensor([[5.0, 5.0], [-5.0, -5.0]]), q.embed).min(1).values
    assert (d < 0.1).all()


def test_prior_is_causal() -> None:
    p = PixelSNAIL(16, (6, 6), channels=8, blocks=2, attention=True, attention_dim=8, dropout=0.0).eval()
    c = torch.randint(0, 16, (1, 6, 6))
    base = p(c)
    for pos in (0, 7, 20, 35):
        c2 = c.clone().flatten()
        c2[pos] = (c2[pos] + 1) % 16
        delta = (p(c2.view(1, 6, 6)) - base).abs().amax(1).flatten()
        assert delta[: pos + 1].max() < 1e-5, f"position {pos} leaks into earlier logits"
        if pos < 35:
            assert delta[pos + 1 :].max() > 0


def test_bottom_half_neighbours() -> None:
    u = torch.zeros(1, 3, 3, dtype=torch.bool)
    u[0, 2, 0] = True  # bottom-left of (1, 1), bottom of (1, 0)
    got = bottom_half_any(u)[0]
    expected = torch.zeros(3, 3, dtype=torch.bool)
    expected[1, 0] = expected[1, 1] = True
    assert torch.equal(got, expected)
    u = torch.zeros(1, 3, 3, dtype=torch.bool)
    u[0, 1, 2] = True  # right of (1, 1); bottom-right of (0, 1); bottom of (0, 2)
    got = bottom_half_any(u)[0]
    assert got[1, 1] and got[0, 1] and got[0, 2] and not got[1, 2] and not got[2, 2]


def test_replace_needs_an_unlikely_neighbour() -> None:
    logits = torch.zeros(1, 4, 2, 2)
    logits[:, 1] = 10.0  # code 1 is the likely one everywhere
    codes = torch.tensor([[[0, 1], [1, 1]]])  # only (0, 0) unlikely: no unlikely bottom-half neighbour
    new, replaced = replace_step(codes, logits, torch.tensor(5.0))
    assert not replaced.any() and torch.equal(new, codes)
    codes = torch.tensor([[[0, 0], [1, 1]]])  # (0, 0) has unlikely right neighbour (0, 1)
    new, replaced = replace_step(codes, logits, torch.tensor(5.0))
    assert replaced[0, 0, 0] and new[0, 0, 0] == 1 and new[0, 0, 1] == 0  # (0,1) has no unlikely bottom half


class CopyPrevious(torch.nn.Module):
    """A causal toy prior worked by hand: the likely code at each position is the one before it in raster
    order (code 0 at the first position), at NLL 0; any other code has NLL about 10."""

    def __init__(self, n_codes: int) -> None:
        super().__init__()
        self.n_codes = n_codes

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        b, h, w = codes.shape
        previous = torch.cat([torch.zeros(b, 1, dtype=codes.dtype), codes.reshape(b, -1)[:, :-1]], 1)
        return 10.0 * F.one_hot(previous, self.n_codes).permute(0, 2, 1).reshape(b, self.n_codes, h, w).float()


def test_restoration_cascade_by_hand() -> None:
    """Codes [0 1 2 0 2]: 1, 2, 0 and 2 are unlikely after the code before each; the last has no neighbour.

    The reference replaces 1 by 0, then judges 2 after that 0: unlikely, its right neighbour too, so 0;
    then the 0 at position 3 follows a 0 and stays. One parallel pass sees the original context only: 0,
    then 1 and 2 (the codes before). One round judges the original codes after the restored ones and
    reaches the reference; judging the restored codes instead (the rounds before 2026-12-06) keeps the 2
    at position 3, a replacement the reference never makes.
    """
    p, codes, thr = CopyPrevious(3), torch.tensor([[[0, 1, 2, 0, 2]]]), torch.tensor(5.0)
    seq, passes = restore_sequential(p, codes[0], float(thr))
    assert seq.tolist() == [[0, 0, 0, 0, 2]] and passes == 3  # one prior pass, then one per replaced code
    once = restore_fast(p, codes, p(codes), thr, rounds=0)
    assert once.tolist() == [[[0, 0, 1, 2, 2]]]
    assert restore_fast(p, codes, p(codes), thr, rounds=1).tolist() == [[[0, 0, 0, 0, 2]]]
    assert replace_step(once, p(once), thr)[0].tolist() == [[[0, 0, 0, 2, 2]]]  # the old round


def test_sequential_reference_judges_again_after_a_change() -> None:
    """Grid [[0 0 1] [1 0 0]]: the 1 at (1, 0) follows a 1 and is likely, until the reference replaces
    (0, 2) (unlikely, with an unlikely bottom-left neighbour) by 0; judged again, (1, 0) is unlikely beside
    an unlikely (1, 1) and becomes 0, and then (1, 1) follows a 0."""
    p = CopyPrevious(3)
    seq, passes = restore_sequential(p, torch.tensor([[0, 0, 1], [1, 0, 0]]), 5.0)
    assert seq.tolist() == [[0, 0, 0], [0, 0, 0]] and passes == 3


def test_fast_and_sequential_restoration_agree_on_simple_prior() -> None:
    torch.manual_seed(1)
    p = PixelSNAIL(8, (5, 5), channels=8, blocks=1, attention=False, dropout=0.0).eval()
    codes = torch.randint(0, 8, (1, 5, 5))
    with torch.no_grad():
        thr = float(code_nll(p(codes), codes).median())
        fast = restore_fast(p, codes, p(codes), torch.tensor(thr), rounds=3)
    seq, passes = restore_sequential(p, codes[0], thr)
    assert passes == 1 + int((seq != codes[0]).sum())  # no pass without a change, one for each
    assert (fast[0] == seq).float().mean() > 0.6


def test_ssim_is_one_for_identical_and_lower_for_noise() -> None:
    g = gaussian_1d(7, 1.5)
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(ssim_map(x, x, g), torch.ones_like(x), atol=1e-4)
    assert ssim_map(x, torch.rand_like(x), g).mean() < 0.5


def test_continuous_bernoulli_prefers_right_logits() -> None:
    x = torch.full((1, 1, 4, 4), 0.9)
    good = continuous_bernoulli_nll(torch.full_like(x, 2.2), x)
    bad = continuous_bernoulli_nll(torch.full_like(x, -2.2), x)
    assert good < bad
